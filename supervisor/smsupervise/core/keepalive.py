"""Staying up after a failure (``--keep-alive-on-failure``): the job's leftovers, the services and
the control socket stay, so the failed job can be looked into; it ends when its time is over, on
``smsupervise-debug release`` or on a stop signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from smsupervise.streams.events import EventLog

COUNTDOWN = 10.0  # a keep_alive event this often while kept alive


class KeepAlive:
    """At most one keep-alive per run: ``hold`` it, ``end`` it; ``started`` stays True after."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._release: asyncio.Event | None = None
        self._until = 0.0  # monotonic

    @property
    def started(self) -> bool:
        return self._release is not None

    async def hold(self, seconds: float) -> None:
        """Stay until ``seconds`` are over or ``end`` is called, with a countdown event."""
        release = self._release = asyncio.Event()
        until = self._until = time.monotonic() + seconds
        self.log.warning(
            "keep_alive_started",
            seconds=round(seconds, 3),
            until=round(time.time() + seconds, 3),
            hint="the job failed; inspect it with smsupervise-debug, end this with "
            "smsupervise-debug release or SIGTERM",
        )
        while not release.is_set():
            left = until - time.monotonic()
            if left <= 0:
                self.end("expired")
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(release.wait(), min(COUNTDOWN, left))
            if not release.is_set() and until - time.monotonic() > 0:
                self.log.info("keep_alive", seconds_left=round(until - time.monotonic(), 1))

    def end(self, how: str) -> bool:
        """End the keep-alive now (``how``: released, expired, a signal's name); False when none
        is being held."""
        if self._release is None or self._release.is_set():
            return False
        self._release.set()
        self.log.info("keep_alive_ended", how=how)
        return True

    def seconds_left(self, now: float) -> float | None:
        """For ``status``: None unless a keep-alive is being held."""
        if self._release is None or self._release.is_set():
            return None
        return max(0.0, self._until - now)
