"""Is the server ready? The prober sends the health check (``config.Probe``) to the server's port
on a fresh connection, again and again, and keeps the answer: ``/ping`` is answered from it.

Every 0.25 s until the first 2xx, then every second; a ``/ping`` that finds the server not ready asks
for a probe at once and waits for it a little (``FRESH_WAIT``), so a server that just became ready is
seen at the next ``/ping`` and every answer still leaves within SageMaker's 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from typing import NamedTuple

from httptools import HttpParserError, HttpResponseParser

from smsupervise.serve.config import BACKEND_HOST, Probe
from smsupervise.streams.events import EventLog

STARTING_INTERVAL = 0.25
READY_INTERVAL = 1.0
PROBE_TIMEOUT = 10.0  # a ready server that does not answer its health check in this long is not ready
FRESH_WAIT = 1.0  # how long a /ping waits for a probe it asked for (SageMaker's timeout is 2 s)


class State(enum.Enum):
    """What the prober knows."""

    STARTING = "starting"  # never ready yet
    READY = "ready"
    DOWN = "down"  # was ready, the last check failed


class Result(NamedTuple):
    """One probe: ready or not, and why not."""

    ok: bool
    why: str


class _Answer:
    """httptools' callbacks for one response: the end of the message."""

    def __init__(self) -> None:
        self.done = False

    def on_message_complete(self) -> None:
        self.done = True


async def probe_once(port: int, probe: Probe, timeout: float) -> Result:
    """Send the health check once; 2xx is ready (the whole answer is read, then dropped)."""
    answer = _Answer()
    parser = HttpResponseParser(answer)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(BACKEND_HOST, port), timeout)
    except (OSError, asyncio.TimeoutError) as error:
        return Result(False, f"{probe.method} {probe.path}: cannot connect to port {port}: {_why(error)}")
    try:
        writer.write(probe.request(port))
        deadline = time.monotonic() + timeout
        while not answer.done:
            data = await asyncio.wait_for(reader.read(65536), max(0.0, deadline - time.monotonic()))
            if not data:
                return Result(False, f"{probe.method} {probe.path}: the server closed the connection")
            parser.feed_data(data)
    except (OSError, asyncio.TimeoutError, HttpParserError) as error:
        return Result(False, f"{probe.method} {probe.path}: {_why(error)}")
    finally:
        writer.close()
    status = _status(parser)
    if 200 <= status < 300:
        return Result(True, "")
    return Result(False, f"{probe.method} {probe.path} answered {status}")


def _status(parser: HttpResponseParser) -> int:
    try:
        return parser.get_status_code()
    except HttpParserError:
        return 0


def _why(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return "no answer in time"
    return str(error) or type(error).__name__


class Prober:
    """Probes the server for the whole run; ``state`` and ``why`` are what ``/ping`` answers from."""

    def __init__(self, port: int, probe: Probe, log: EventLog) -> None:
        self.port = port
        self.probe = probe
        self.log = log
        self.state = State.STARTING
        self.why = "your server has not passed its health check yet"
        self.started = time.monotonic()
        self._wake = asyncio.Event()
        self._next: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.probes = 0
        self.probe_started: float | None = None  # the probe in flight

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def fresh(self, wait: float = FRESH_WAIT) -> None:
        """Ask for a probe now and wait for its answer, at most ``wait`` seconds."""
        if self._next is None or self.task is None or self.task.done():
            return
        self._wake.set()
        await asyncio.wait([asyncio.shield(self._next)], timeout=wait)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._next = loop.create_future()
        while True:
            self.probe_started = time.monotonic()
            try:
                result = await probe_once(self.port, self.probe, PROBE_TIMEOUT)
            except Exception as error:
                result = Result(False, f"the health check failed inside smsupervise: {error!r}")
            self.probes += 1
            self.probe_started = None
            self._update(result)
            answered, self._next = self._next, loop.create_future()  # fresh() waits for the next one
            answered.set_result(None)
            interval = READY_INTERVAL if self.state is State.READY else STARTING_INTERVAL
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    def reason(self) -> str:
        """Why not ready: a health check that has not answered for a while says so (a server
        still loading its model), else the last check's answer."""
        started = self.probe_started
        if started is not None and time.monotonic() - started >= FRESH_WAIT / 2:
            waited = time.monotonic() - started
            return f"{self.probe.method} {self.probe.path}: no answer for {waited:.1f} s (still loading?)"
        return self.why

    def _update(self, result: Result) -> None:
        if result.ok and self.state is not State.READY:
            first = self.state is State.STARTING
            self.state = State.READY
            self.why = ""
            self.log.info(
                "serve_ready",
                after_s=round(time.monotonic() - self.started, 3),
                check=f"{self.probe.method} {self.probe.path}",
                port=self.port,
                again=not first,
            )
        elif not result.ok:
            if self.state is State.READY:
                self.state = State.DOWN
                self.log.warning("serve_unready", why=result.why, port=self.port)
            self.why = result.why
