"""A few file descriptors held in reserve for the stop, so that a process that reached
RLIMIT_NOFILE (a flood of connections, a leak) can still start the checkpoint hook with its pipes
and write the outcome file. The only holder of these fds: ``/dev/null`` opened close-on-exec,
closed for the length of a synchronous step (no other callback of the loop runs meanwhile, so
nobody else can take them), then taken again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

STOP_NEEDS = 8  # the hook's two pipes (4), its pidfd, the outcome file and its directory, one spare


class FdReserve:
    """``count`` fds on /dev/null; ``released()`` gives them back to the kernel for one step."""

    def __init__(self, count: int = STOP_NEEDS) -> None:
        self.count = count
        self.fds: list[int] = []
        self._take()

    def _take(self) -> None:
        while len(self.fds) < self.count:
            try:
                self.fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:  # none left now: the next release gives back what we hold
                return

    @contextlib.contextmanager
    def released(self) -> Iterator[int]:
        """Close the reserve for the body (which must not yield to the loop); yields how many fds
        were freed; the reserve is taken again afterwards, as far as fds allow."""
        freed = len(self.fds)
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
        try:
            yield freed
        finally:
            self._take()

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
