"""Exit statuses and the exit-code table."""

from __future__ import annotations

import os
import signal

import pytest

from smsupervise.core.status import ExitCode, ExitStatus, signal_name


@pytest.mark.parametrize("code", [0, 1, 2, 127, 255])
def test_exited_status_decodes_to_its_code(code: int) -> None:
    """A raw wait status of a normal exit decodes to that code."""
    status = ExitStatus.from_wait_status(code << 8)
    assert status == ExitStatus(code=code)
    assert status.shell_code() == code
    assert status.ok is (code == 0)


@pytest.mark.parametrize("signum", [1, 9, 15, 31, 34, 64])
def test_signalled_status_gives_128_plus_n(signum: int) -> None:
    """A signal death decodes to the signal and reports 128+N, never 0."""
    status = ExitStatus.from_wait_status(signum)
    assert status.signal == signum
    assert status.shell_code() == 128 + signum
    assert not status.ok


def test_unknown_status_is_never_success() -> None:
    """An empty status (no code, no signal) reports EX_SOFTWARE, not 0."""
    assert ExitStatus().shell_code() == ExitCode.SOFTWARE == 70


def test_real_waitpid_statuses_decode() -> None:
    """Statuses from real processes decode the same way as the synthetic ones."""
    pid = os.fork()
    if pid == 0:
        os._exit(42)
    assert ExitStatus.from_wait_status(os.waitpid(pid, 0)[1]).code == 42
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    assert ExitStatus.from_wait_status(os.waitpid(pid, 0)[1]).describe() == "SIGKILL (signal 9)"


def test_signal_names_cover_realtime_signals() -> None:
    """Real-time signals are named relative to SIGRTMIN/SIGRTMAX."""
    assert signal_name(15) == "SIGTERM"
    assert signal_name(int(signal.SIGRTMIN) + 2) == "SIGRTMIN+2"
    assert signal_name(int(signal.SIGRTMAX) - 1) == "SIGRTMAX-1"


def test_every_exit_code_and_every_signal_from_a_raw_wait_status() -> None:
    """The sweep tini runs end to end, on the pure decoding (milliseconds): every exit code 0..255
    comes back as itself, every signal N as 128+N (capped at 255); only code 0 is ok.
    tests/process/test_core.py keeps a dozen codes end to end."""
    for code in range(256):
        status = ExitStatus.from_wait_status(code << 8)
        assert (status.code, status.signal, status.shell_code(), status.ok) == (code, None, code, code == 0)
    for signum in range(1, 65):
        status = ExitStatus.from_wait_status(signum)
        assert (status.signal, status.shell_code(), status.ok) == (signum, min(128 + signum, 255), False)
