"""Interactive use on a real pty: smsupervise leads a session whose controlling terminal is the pty
and runs an interactive bash; as a subreaper, and as PID 1 of a fresh PID namespace made session
leader on the pty by ``setsid --ctty`` (what ``docker run -it`` gives PID 1)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smsupervise.linux.proctree import descendants
from tests.conftest import PYTHON, sleep_until
from tests.debug.conftest import CLIENT_ENV

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


class Terminal:
    """smsupervise on the slave side of a new pty, as its session's leader; we hold the master."""

    def __init__(self, mode: str, *args: str) -> None:
        self.master, slave = os.openpty()
        env = {**CLIENT_ENV, "PS1": "PROMPT> ", "TERM": "dumb"}
        pid1 = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "setsid", "--ctty"]
        self.proc = subprocess.Popen(
            [
                *(pid1 if mode == "pid1" else []),
                PYTHON,
                "-m",
                "smsupervise",
                "--control-socket",
                "none",
                *args,
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env=env,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # noqa: PLW1509 - no other way to a ctty
        )
        os.close(slave)
        self.seen = b""

    def expect(self, text: bytes, timeout: float = 20) -> bytes:
        """Read the terminal until ``text`` appears; returns what was read up to it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} did not appear; the terminal shows {self.seen[-400:]!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.master, 4096)
        before, _, self.seen = self.seen.partition(text)
        return before

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def running(self, program: str) -> int:
        """The pid of ``program`` once it runs below smsupervise."""

        def find() -> int | None:
            for pid in descendants(self.proc.pid):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/comm").read_text().strip() == program:
                        return pid
            return None

        return sleep_until(find, what=f"{program} running")

    def close(self) -> None:
        if self.proc.poll() is None:
            for pid in [*descendants(self.proc.pid), self.proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            self.proc.wait(10)
        os.close(self.master)


@pytest.fixture
def terminal(mode: str) -> Iterator[Terminal]:
    """An interactive bash under smsupervise on a fresh pty."""
    term = Terminal(mode, "--log-level", "warning", "bash", "--norc", "--noprofile", "-i")
    yield term
    term.close()


def test_a_prompt_appears_and_job_control_is_on(terminal: Terminal) -> None:
    """bash finds a terminal it controls: it prompts, and `$-` has m (monitor: job control)."""
    terminal.expect(b"PROMPT> ")
    terminal.send(b"echo $- | tr a-z A-Z\n")  # the answer in capitals: not the echo of what we typed
    terminal.expect(b"tr a-z A-Z")
    flags = terminal.expect(b"PROMPT> ")
    assert b"M" in flags


def test_ctrl_c_interrupts_the_foreground_command_not_the_supervisor(terminal: Terminal) -> None:
    """^C ends `sleep` and bash prompts again; smsupervise starts no stop and runs on."""
    terminal.expect(b"PROMPT> ")
    terminal.send(b"sleep 60\n")
    sleeper = terminal.running("sleep")
    terminal.send(b"\x03")
    terminal.expect(b"PROMPT> ")
    sleep_until(lambda: not os.path.exists(f"/proc/{sleeper}"), what="sleep gone")
    assert terminal.proc.poll() is None
    terminal.send(b"exit 7\n")
    assert terminal.proc.wait(20) == 7
    assert b"stop_requested" not in terminal.seen


def test_ctrl_z_stops_the_foreground_job(terminal: Terminal) -> None:
    """^Z stops `sleep` (bash reports it), `jobs` lists it, and the supervisor is untouched."""
    terminal.expect(b"PROMPT> ")
    terminal.send(b"sleep 61\n")
    sleeper = terminal.running("sleep")
    terminal.send(b"\x1a")
    terminal.expect(b"Stopped")
    assert Path(f"/proc/{sleeper}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    terminal.send(b"jobs\n")
    terminal.expect(b"sleep 61")
    terminal.send(b"kill -9 %1; wait\n")
    sleep_until(lambda: not os.path.exists(f"/proc/{sleeper}"), what="sleep killed")
    terminal.expect(b"PROMPT> ")
    terminal.send(b"exit 0\n")
    terminal.expect(b"exit")
    sleep_until(
        lambda: terminal.proc.poll() is not None, timeout=30, what=f"the end; shown: {terminal.seen!r}"
    )
    assert terminal.proc.returncode == 0


def test_without_a_terminal_output_is_still_framed() -> None:
    """The negative twin: stdin not a terminal, the child's output is JSON records as before."""
    done = subprocess.run(
        [PYTHON, "-m", "smsupervise", "--control-socket", "none", "--log-level", "warning", "echo", "hi"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env=CLIENT_ENV,
        timeout=60,
        check=False,
    )
    assert done.stdout.startswith(b'{"ts":')
    assert b'"msg":"hi"' in done.stdout
