"""The same scenarios against tini and dumb-init (when installed), as PID 1, beside smsupervise.

Each test says what the peers do and why smsupervise differs where it does.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON, UNSHARE_PROBLEM, Supervised, helper, init_prefix, sleep_until

pytestmark = [
    pytest.mark.peer,
    pytest.mark.pid1,
    pytest.mark.skipif(UNSHARE_PROBLEM is not None, reason=UNSHARE_PROBLEM or ""),
]

INITS = {
    "smsupervise": [
        PYTHON,
        "-m",
        "smsupervise",
        "--log-level",
        "warning",
        "--leftover-grace",
        "1",
        "--log-format",
        "raw",
    ],
    "tini": ["tini", "-g", "--"],
    "dumb-init": ["dumb-init"],
}


def _init(name: str) -> list[str]:
    if shutil.which(INITS[name][0]) is None:
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return INITS[name]


def _pid1(name: str, *command: str, **popen: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*init_prefix("pid1"), *_init(name), *command], capture_output=True, timeout=60, check=False, **popen
    )  # type: ignore[call-overload]


@pytest.mark.parametrize("init", list(INITS))
@pytest.mark.parametrize("code", [0, 1, 2, 126, 127, 255])
def test_exit_code_passthrough_is_the_same(init: str, code: int) -> None:
    """All three pass the child's exit code through."""
    assert _pid1(init, "sh", "-c", f"exit {code}").returncode == code


@pytest.mark.parametrize("init", list(INITS))
def test_signal_death_is_128_plus_n_for_all(init: str) -> None:
    """All three report a child killed by SIGKILL as 137."""
    assert _pid1(init, "sh", "-c", "kill -9 $$").returncode == 137


@pytest.mark.parametrize("init", list(INITS))
def test_group_forwarding_reaches_a_grandchild_for_all(init: str, tmp_path: Path) -> None:
    """With group forwarding (tini -g; dumb-init's default; ours), USR1 reaches a grandchild."""
    record = tmp_path / "signals"
    script = (
        f"trap : USR1; {PYTHON} {helper('print_signals.py')} {record} & c=$!; "
        "while kill -0 $c 2>/dev/null; do wait $c; done"
    )
    run = Supervised("pid1", [*init_prefix("pid1"), *_init(init), "sh", "-c", script])
    try:
        sleep_until(lambda: record.exists() and "ready" in record.read_text(), what="ready")
        run.signal(signal.SIGUSR1)
        sleep_until(lambda: "10" in record.read_text().split(), what="USR1 at the grandchild")
    finally:
        run.kill()


@pytest.mark.parametrize(("init", "sees_term"), [("smsupervise", True), ("tini", False), ("dumb-init", None)])
def test_leftover_that_ignores_term_when_the_child_exits(
    init: str, sees_term: bool | None, tmp_path: Path
) -> None:
    """When the main child exits, a leftover that survives SIGTERM: tini never signals it and exits
    at once (tini#180); dumb-init sends SIGTERM and exits without waiting (dumb-init#212), so the
    namespace's SIGKILL races the leftover's handler (None: either outcome). smsupervise sends
    SIGTERM, waits --leftover-grace, SIGKILLs and reaps it: the leftover always sees SIGTERM."""
    record = tmp_path / "signals"
    script = (
        f"{PYTHON} {helper('print_signals.py')} {record} --survive-term & "
        f"while ! grep -q ready {record} 2>/dev/null; do sleep 0.01; done; exit 0"
    )
    result = _pid1(init, "sh", "-c", script)
    assert result.returncode == 0
    got_term = str(int(signal.SIGTERM)) in record.read_text().split()
    if sees_term is not None:
        assert got_term is sees_term


@pytest.mark.parametrize(("init", "expected"), [("smsupervise", 2), ("tini", 127), ("dumb-init", 2)])
def test_missing_program_codes_differ(init: str, expected: int) -> None:
    """`INIT train` with nothing to train: tini says 127 (it tried to exec `train`), dumb-init 2.
    smsupervise says 2, a configuration error: `train` is a mode for us, and the message lists the
    four places it looked (SMSUPERVISE_TRAIN, script mode, `train` on PATH)."""
    argv = _init(init)
    program = shutil.which(argv[0]) or argv[0]
    unshare = shutil.which("unshare") or "unshare"
    prefix = [unshare, *init_prefix("pid1")[1:]]
    result = subprocess.run(
        [*prefix, program, *argv[1:], "train"],
        capture_output=True,
        timeout=60,
        check=False,
        env={"PATH": "/nonexistent"},
    )
    assert result.returncode == expected
    if init == "smsupervise":
        assert b"SMSUPERVISE_TRAIN" in result.stderr
        assert b"sagemaker_program" in result.stderr


@pytest.mark.parametrize(
    ("init", "pipe_ignored"), [("smsupervise", False), ("tini", True), ("dumb-init", False)]
)
def test_inherited_sigpipe_ignore_reaches_the_child_only_under_tini(init: str, pipe_ignored: bool) -> None:
    """A parent that ignores SIGPIPE (Python does, and so may a shell): tini passes the ignore on
    to the child, so a `yes | head` pipeline in the job never ends by SIGPIPE; dumb-init and
    smsupervise reset every disposition to the default."""
    argv = [*_init(init), "grep", "^SigIgn", "/proc/self/status"]
    program = shutil.which(argv[0]) or argv[0]
    code = (
        "import os, signal, sys; signal.signal(signal.SIGPIPE, signal.SIG_IGN); "
        "os.execv(sys.argv[1], sys.argv[2:])"
    )
    result = subprocess.run(
        [*init_prefix("pid1"), PYTHON, "-c", code, program, *argv],
        capture_output=True,
        timeout=60,
        check=False,
    )
    ignored = int(result.stdout.split()[-1], 16)
    assert bool(ignored & (1 << (signal.SIGPIPE - 1))) is pipe_ignored


@pytest.mark.parametrize("init", list(INITS))
@pytest.mark.parametrize("closed", ["<&-", ">&-", "2>&-", "<&- >&- 2>&-"])
def test_closed_standard_fds_at_start_for_all(init: str, closed: str) -> None:
    """Started with fds 0-2 closed, dumb-init and smsupervise run the job and pass its code through
    (smsupervise opens them on /dev/null first, test_hardening.py); tini, without stdin, fails its
    tcsetpgrp(0) and exits 1 without running the job ("tcsetpgrp failed: Bad file descriptor")."""
    argv = [*init_prefix("pid1"), *_init(init), "sh", "-c", "exit 5"]
    result = subprocess.run(
        ["sh", "-c", f'exec "$@" {closed}', "sh", *argv], capture_output=True, timeout=60, check=False
    )
    tini_without_stdin = init == "tini" and "<&-" in closed
    assert result.returncode == (1 if tini_without_stdin else 5)


@pytest.mark.parametrize("init", ["smsupervise", "dumb-init"])
def test_inherited_blocked_sigterm_still_stops(init: str) -> None:
    """A parent that blocked SIGTERM: dumb-init and smsupervise clear the mask and stop on SIGTERM.
    tini is left out on purpose: it restores the parent's mask in its child (pid1.md, tini #8), so
    the forwarded TERM stays blocked in the job."""
    block = (
        "import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM]); "
        "os.execvp(sys.argv[1], sys.argv[1:])"
    )
    argv = [PYTHON, "-c", block, *init_prefix("pid1"), *_init(init), "sh", "-c", "echo up; exec sleep 60"]
    run = Supervised("pid1", argv)
    try:
        assert run.proc.stdout is not None
        assert b"up" in run.proc.stdout.readline()
        run.signal(signal.SIGTERM)
        code, _, _ = run.wait(timeout=30)
    finally:
        run.kill()
    assert code == 143
