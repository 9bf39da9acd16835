"""Notices a torchrun rank's failure the moment the rank exits, before torchrun does.

torchrun looks at its ranks every ``--monitor-interval`` (0.1 s), then prints its summary and tears
down its own interpreter (with torch loaded: 0.3 s on a quiet 2-vCPU VM, seconds under load) before
it exits; only then did the other hosts hear of the failure. Here each rank gets a pidfd (the ranks
are torchrun's children, not ours, so ``waitpid`` is not ours to call): when it becomes readable the
rank has exited, and while torchrun has not reaped it yet its wait status is in ``/proc/<pid>/stat``.
A status other than exit 0 is a failure of this host (torchrun runs with ``--max-restarts 0``, as the
toolkit's, so one failed rank fails the host). A rank torchrun reaps first is simply left to it: the
launcher's exit reports the failure as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import NamedTuple

from smsupervise.core.spawn import watch_pidfd
from smsupervise.core.status import ExitStatus
from smsupervise.linux import proctree

POLL = 0.05  # how often the launcher's children are looked at until every rank is watched


class RankExit(NamedTuple):
    """A rank that ended with anything but exit 0, as soon as it did."""

    rank: int
    local_rank: int
    status: ExitStatus
    at: float  # wall clock


class RankWatch:
    """Watches the ``per_host`` ranks of one torchrun (``launcher_pid``). ``start()``, ``close()``."""

    def __init__(
        self, launcher_pid: int, node_rank: int, per_host: int, on_failed: Callable[[RankExit], None]
    ) -> None:
        self.launcher_pid = launcher_pid
        self.node_rank = node_rank
        self.per_host = per_host
        self.on_failed = on_failed
        self.watched: dict[int, int] = {}  # pid -> its pidfd
        self.task: asyncio.Task[None] | None = None
        self.quiet = False  # a stop began: the ranks' exits are its doing

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._discover())

    def stop_begun(self) -> None:
        self.quiet = True

    def close(self) -> None:
        self.quiet = True
        if self.task is not None:
            self.task.cancel()
        loop = asyncio.get_running_loop()
        for fd in self.watched.values():
            loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self.watched.clear()

    async def _discover(self) -> None:
        seen: set[int] = set()
        while len(seen) < self.per_host and proctree.alive(self.launcher_pid):
            for pid in proctree.children(self.launcher_pid):
                if pid not in seen and self._watch(pid):
                    seen.add(pid)
            await asyncio.sleep(POLL)

    def _watch(self, pid: int) -> bool:
        """Watch ``pid`` if it is a rank (it has exec'd with ``LOCAL_RANK``); False otherwise."""
        local = proctree.environment_value(pid, "LOCAL_RANK")
        if local is None or not local.isdigit():
            return False  # not a rank, or not exec'd yet: looked at again at the next poll
        fd = watch_pidfd(pid)
        if fd is None:
            return True  # already reaped: torchrun has it
        self.watched[pid] = fd
        asyncio.get_running_loop().add_reader(fd, self._exited, pid, int(local))
        return True

    def _exited(self, pid: int, local_rank: int) -> None:
        fd = self.watched.pop(pid)
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        raw = proctree.zombie_status(pid)
        if raw is None or self.quiet:
            return
        status = ExitStatus.from_wait_status(raw)
        if not status.ok:
            rank = self.node_rank * self.per_host + local_rank
            self.on_failed(RankExit(rank, local_rank, status, time.time()))
