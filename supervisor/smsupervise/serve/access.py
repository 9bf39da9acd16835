"""Serving logs: one ``access`` record per request (method, path, status, bytes, latency), except
successful ``/ping``s, which are counted into one ``ping_summary`` per interval (SageMaker pings
every few seconds: a line each floods the logs and the bill). A failed ``/ping`` is always a record."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from smsupervise.streams.events import EventLog


class Access(NamedTuple):
    """One finished request as the front saw it."""

    method: str
    path: str
    status: int | None  # None: no response reached the client
    bytes: int  # response body bytes sent to the client
    latency: float  # seconds from the request's head to its response's end
    outcome: str  # "ok", "cut" (the server went away), "client_gone", "bad_gateway"


class AccessLog:
    """Writes access records and the ``/ping`` summary."""

    def __init__(self, log: EventLog, interval: float) -> None:
        self.log = log
        self.interval = interval
        self.pings = 0
        self.ping_min = 0.0
        self.ping_max = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self.flush()
        self.start()

    def record(self, access: Access, ping: bool) -> None:
        if ping and access.status is not None and 200 <= access.status < 300 and self.interval > 0:
            self.pings += 1
            self.ping_min = access.latency if self.pings == 1 else min(self.ping_min, access.latency)
            self.ping_max = max(self.ping_max, access.latency)
            return
        fields: dict[str, object] = {
            "method": access.method,
            "path": access.path,
            "status": access.status,
            "bytes": access.bytes,
            "latency_ms": round(access.latency * 1000, 3),
        }
        if access.outcome != "ok":
            fields["outcome"] = access.outcome
        self.log.info("access", **fields)

    def flush(self) -> None:
        """The ``ping_summary`` of the interval, if there were any."""
        if not self.pings:
            return
        self.log.info(
            "ping_summary",
            count=self.pings,
            status=200,
            latency_ms_min=round(self.ping_min * 1000, 3),
            latency_ms_max=round(self.ping_max * 1000, 3),
            interval=self.interval,
        )
        self.pings = 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
