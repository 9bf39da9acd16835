"""The only module that calls ``waitpid``. A second waiter would steal statuses: asyncio's watcher
reports 255 and ``Popen`` reports 0 when they lose that race (architecture.md 2.2).

``register`` and the spawn that produced the pid run in one loop callback with no ``await`` between
them, and ``reap`` only ever runs as a loop callback (never inside a signal handler), so a status
cannot be reaped before its pid is registered.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from smsupervise.core.status import ExitStatus


class Reaper:
    """Reaps every child that ends; hands the status of registered pids to their futures."""

    def __init__(self, on_reaped: Callable[[int, ExitStatus, int], None] | None = None) -> None:
        self._waiters: dict[int, asyncio.Future[ExitStatus]] = {}
        self._childless: list[asyncio.Future[None]] = []
        # Every pid reaped, with its peak RSS in bytes (wait4's ru_maxrss): the diagnosis's.
        self.on_reaped = on_reaped

    def register(self, pid: int) -> asyncio.Future[ExitStatus]:
        """A future that gets ``pid``'s exit status. Call in the same callback as the spawn."""
        future: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        self._waiters[pid] = future
        return future

    def reap(self) -> bool:
        """Collect every child that has ended, without blocking; True when no child is left at all
        (then nothing descends from us: no /proc walk is needed to find leftovers)."""
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                self._resolve_childless()
                return True
            if pid == 0:
                return False
            future = self._waiters.pop(pid, None)  # None: an orphan, reaped and forgotten
            if future is not None and not future.done():
                future.set_result(ExitStatus.from_wait_status(status))
            if self.on_reaped is not None:
                self.on_reaped(pid, ExitStatus.from_wait_status(status), usage.ru_maxrss * 1024)

    def waiting_for(self, pid: int) -> bool:
        """Whether ``pid`` is registered and not reaped yet."""
        return pid in self._waiters

    def wait_childless(self) -> asyncio.Future[None]:
        """A future that completes once this process has no children left at all."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._childless.append(future)
        self.reap()
        return future

    def _resolve_childless(self) -> None:
        waiting, self._childless = self._childless, []
        for future in waiting:
            if not future.done():
                future.set_result(None)


def wait_blocking(pid: int, timeout: float) -> ExitStatus | None:
    """Before the event loop exists (machine probes): wait for ``pid``; None after ``timeout``."""
    import time  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return ExitStatus.from_wait_status(status)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.005)
