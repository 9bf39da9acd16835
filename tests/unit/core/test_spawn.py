"""spawn() on real programs: each way a program cannot start has its shell exit code and reason."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from smsupervise.core import reaper
from smsupervise.core.spawn import LaunchSpec, send_to_pid, spawn
from smsupervise.errors import SpawnError


def _script(path: Path, text: str, mode: int = 0o755) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize(
    ("make", "code", "needle"),
    [
        (lambda d: str(d / "missing"), 127, "no such file"),
        (lambda d: "no-such-program-anywhere", 127, "command not found on PATH="),
        (
            lambda d: _script(d / "noexec.sh", "#!/bin/sh\n", 0o644),
            126,
            "permission denied: make it executable",
        ),
        (lambda d: str(d), 126, "is a directory"),
        (
            lambda d: _script(d / "badinterp", "#!/nonexistent/interpreter\n"),
            127,
            "a missing #! interpreter?",
        ),
        (lambda d: _script(d / "garbage", "\x7fELF not really\n"), 126, "exec format error"),
    ],
)
def test_a_program_that_cannot_start_gets_the_shells_code(
    tmp_path: Path, make, code: int, needle: str
) -> None:  # type: ignore[no-untyped-def]
    """Missing, not executable, a directory, a missing #! interpreter, not a binary: 127 or 126."""
    program = make(tmp_path)
    with pytest.raises(SpawnError) as raised:
        spawn(LaunchSpec((program,), {"PATH": str(tmp_path / "empty")}))
    assert raised.value.exit_code == code
    assert needle in raised.value.message()


def test_a_missing_working_directory_is_named(tmp_path: Path) -> None:
    """A cwd that does not exist is refused before anything starts, naming the directory."""
    with pytest.raises(SpawnError, match=r"working directory .*/gone does not exist") as raised:
        spawn(LaunchSpec(("true",), dict(os.environ), str(tmp_path / "gone")))
    assert raised.value.exit_code == 127


def test_a_started_child_leads_its_group_and_is_signalled_through_it(tmp_path: Path) -> None:
    """The twin: a program that can start runs in its own group; send() reaches it, and reports a
    group that is gone."""
    child = spawn(LaunchSpec(("sleep", "30"), dict(os.environ), str(tmp_path)))
    try:
        assert os.getpgid(child.pid) == child.pid
        assert child.group_alive()
        assert child.send(signal.SIGTERM)
        status = reaper.wait_blocking(child.pid, 10)
        assert status is not None
        assert status.signal == signal.SIGTERM
        assert not child.group_alive()
        assert not child.send(signal.SIGTERM)
        assert not send_to_pid(child.pid, signal.SIGTERM)
    finally:
        child.close()
