"""Exit statuses: how a child ended, and the one table of smsupervise's own exit codes."""

from __future__ import annotations

import enum
import os
import signal
from typing import NamedTuple


class ExitCode(enum.IntEnum):
    """smsupervise's own exit codes. Otherwise it exits with the child's code, or 128+N for signal N."""

    SUCCESS = 0
    USAGE = 2  # bad option, environment variable or configuration file; nothing was run
    SOFTWARE = 70  # a bug in smsupervise (EX_SOFTWARE); never 0
    NOT_EXECUTABLE = 126  # the program exists but cannot be executed (shell convention)
    NOT_FOUND = 127  # the program was not found (shell convention)
    SIGNAL_BASE = 128  # killed by signal N -> 128 + N


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15, ``SIGRTMIN+2`` for real-time signals, ``signal 99`` otherwise."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        pass
    rtmin, rtmax = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
    if rtmin < signum < rtmax:
        if signum - rtmin <= rtmax - signum:
            return f"SIGRTMIN+{signum - rtmin}"
        return f"SIGRTMAX-{rtmax - signum}"
    return f"signal {signum}"


class ExitStatus(NamedTuple):
    """How a process ended: exactly one of ``code`` (it exited) or ``signal`` (it was killed)."""

    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        """Decode a raw ``waitpid`` status (only exits and signal deaths reach here)."""
        if os.WIFEXITED(status):
            return cls(code=os.WEXITSTATUS(status))
        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status))
        # Stopped or continued: waitpid is never called with WUNTRACED/WCONTINUED, so this is a bug.
        raise ValueError(f"unexpected wait status {status:#x}")

    def shell_code(self) -> int:
        """The code a shell would report: the exit code, or 128+N when killed by signal N."""
        if self.code is not None:
            return self.code
        if self.signal is not None:
            return min(int(ExitCode.SIGNAL_BASE) + self.signal, 255)
        return int(ExitCode.SOFTWARE)

    @property
    def ok(self) -> bool:
        """True only when the process exited with code 0."""
        return self.code == 0

    def describe(self) -> str:
        """``exit code 3`` or ``SIGKILL (signal 9)``, for messages."""
        if self.code is not None:
            return f"exit code {self.code}"
        if self.signal is not None:
            return f"{signal_name(self.signal)} (signal {self.signal})"
        return "unknown status"
