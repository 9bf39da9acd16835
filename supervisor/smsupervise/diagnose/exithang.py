"""The exit-hang guard: a rank of the job ended, yet the job's main process (the launcher) is still
running ``--exit-timeout`` seconds later (``destroy_process_group``, wandb, a stuck rank or worker:
the job would bill on to MaxRuntime). Then: an ``exit_hang`` event naming what is left, their
Python stacks (the ``smsupervise-debug stacks`` machinery, run as a sibling of the job: its output
is logged like the job's), and the normal stop sequence with reason ``ExitHang``. The job's
outcome is a success by default (the model is written); ``--exit-hang-fails`` makes it a failure.

The clock starts when the sampler sees this host's first rank gone (the lowest ``RANK`` of the
processes with ``RANK`` whose parent has none: rank 0 on the first host) while the main process
runs; a rank that fails with a known status other than exit 0 does not start it (the launcher's own
failure handling is under way). A rank that starts after that (an elastic restart) stops the clock.
A progress watchdog's ``--done-pattern`` can start it too (``start``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping

from smsupervise.core.siblings import Sibling
from smsupervise.diagnose.facts import Departure, ProcView
from smsupervise.errors import SpawnError
from smsupervise.streams.events import EventLog

EXIT_HANG_REASON = "ExitHang"
STACKS_TIMEOUT = 30.0  # the longest the stacks are waited for before the stop goes ahead


class ExitHangGuard:
    """Arms on the first rank gone; fires if the main process still runs ``timeout`` s later."""

    def __init__(
        self,
        log: EventLog,
        timeout: float,
        *,
        running: Callable[[], bool],
        main: Callable[[], int | None],
        live: Callable[[], Mapping[int, ProcView]],
        spawn: Callable[[tuple[str, ...]], Sibling],
        request_stop: Callable[[str], None],
    ) -> None:
        self.log = log
        self.timeout = timeout
        self.running = running
        self.main = main
        self.live = live
        self.spawn = spawn
        self.request_stop = request_stop
        self.started_at: float | None = None
        self.why: str | None = None
        self.hung = False  # it fired: the stop that follows is its doing
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def rank_left(self, departure: Departure) -> None:
        """The sampler saw this host's first rank gone while the main process runs: start the clock."""
        proc = departure.proc
        if departure.status is not None and not departure.status.ok:
            return
        how = departure.status.describe() if departure.status is not None else "status not seen"
        self.start(f"rank {proc.rank} (pid {proc.pid}) ended ({how})")

    def rank_started(self, view: ProcView) -> None:
        """A rank started after the clock did (an elastic restart): the job goes on."""
        if self._timer is not None and not self.hung:
            self._timer.cancel()
            self._timer, self.started_at = None, None
            self.log.info("exit_clock_stopped", why=f"rank {view.rank} (pid {view.pid}) started")

    def start(self, why: str) -> None:
        """Start the clock (once); ``why`` is what ended (a rank, a done pattern)."""
        if self.timeout <= 0 or self.started_at is not None or not self.running():
            return
        self.started_at, self.why = time.monotonic(), why
        self.log.info("exit_clock_started", why=why, exit_timeout=self.timeout)
        self._timer = asyncio.get_running_loop().call_later(self.timeout, self._expired)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    def _expired(self) -> None:
        if not self.running():
            return
        self.hung = True
        left = sorted(self.live().values(), key=lambda v: v.pid)
        self.log.warning(
            "exit_hang",
            why=self.why,
            exit_timeout=self.timeout,
            remaining=[{"pid": v.pid, "rank": v.rank, "comm": v.comm, "rss": v.rss} for v in left],
            action="stacks, then the stop sequence",
        )
        self._task = asyncio.ensure_future(self._stacks_then_stop())

    async def _stacks_then_stop(self) -> None:
        main = self.main()
        if main is not None:
            argv = (sys.executable, "-m", "smsupervise.debug", "--pid", str(main), "stacks")
            try:
                sibling = self.spawn(argv)
            except SpawnError as error:
                self.log.warning("exit_hang_stacks", error=error.message())
            else:
                self.log.info("exit_hang_stacks", pid=sibling.child.pid, argv=list(argv))
                try:
                    await asyncio.wait_for(asyncio.shield(sibling.exit), STACKS_TIMEOUT)
                except TimeoutError:
                    self.log.warning("exit_hang_stacks", pid=sibling.child.pid, error="timed out")
        self.request_stop(EXIT_HANG_REASON)
