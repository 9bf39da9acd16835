"""The front: a Service on the supervisor's loop that owns the port SageMaker calls.

It accepts connections (``proxy``), answers ``/ping`` from the prober's state (``health``) and from
whether the server process is alive (the supervisor's reaper), and drains on a stop (``drain``: the
supervisor awaits it before the server's stop signal).

Containment: the front never touches the reaper, signals or the child; every callback the loop makes
into it catches its own errors (one connection is closed, ``serve_front_error`` is logged once per
kind), the prober's errors turn ``/ping`` 503, and ``drain`` is bounded by its two options and ends
early on a second SIGTERM, whatever happens inside it. The supervision of PID 1 goes on regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import traceback
from collections.abc import Callable, Mapping

import orjson

from smsupervise.serve.access import Access, AccessLog
from smsupervise.serve.config import FrontConfig
from smsupervise.serve.health import Prober, State
from smsupervise.serve.proxy import ClientConnection, Exchange, Upstreams
from smsupervise.serve.workers import WorkerWatch
from smsupervise.streams.events import EventLog

ACCEPT_BATCH = 64  # connections accepted per readiness callback


class Front:
    """The serve front. ``start``/``close`` are the Service protocol; ``drain`` the stop's hook."""

    def __init__(
        self, sock: socket.socket, config: FrontConfig, log: EventLog, server_running: Callable[[], bool]
    ) -> None:
        self.sock: socket.socket | None = sock
        self.config = config
        self.log = log
        self.server_running = server_running
        self.paths: Mapping[bytes, bytes] = config.paths
        self.connections: set[ClientConnection] = set()
        self.in_flight: set[Exchange] = set()
        self.closing = False  # the listener is closed: connections end after their response
        self.stopping = False  # a stop began: /ping is 503
        self.prober = Prober(config.backend_port, config.probe, log)
        self.access = AccessLog(log, config.ping_summary)
        self.upstreams = Upstreams(self, config.backend_port, self._connect_error)
        self.counts = {"ok": 0, "cut": 0, "client_gone": 0, "bad_gateway": 0}
        self._idle = asyncio.Event()
        self._faults: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._connect_errors = 0
        self.workers: WorkerWatch | None = None  # worker deaths the server reports (app attaches it)

    # -- the Service protocol ------------------------------------------------------------------
    def start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            assert self.sock is not None
            loop.add_reader(self.sock.fileno(), self._accept)
            self.prober.start()
            self.access.start()
        except Exception as error:
            self.fault("start", error)
            return
        self.log.info(
            "serve_front",
            port=self.config.port,
            server_port=self.config.backend_port,
            check=f"{self.config.probe.method} {self.config.probe.path}",
            paths={k.decode(): v.decode() for k, v in self.paths.items()},
        )

    def close(self) -> None:
        """The run is over (the server has exited): what is still in flight was cut."""
        with contextlib.suppress(Exception):
            self._stop_accepting(sweep=False)
        for exchange in list(self.in_flight):
            exchange.fail("cut", "smsupervise is exiting")
        for connection in list(self.connections):
            connection.abort()
        self.upstreams.close()
        self.prober.close()
        self.access.close()
        for task in self._tasks:
            task.cancel()
        self.log.info(
            "serve_stopped",
            served=self.counts["ok"],
            cut=self.counts["cut"],
            client_gone=self.counts["client_gone"],
            bad_gateway=self.counts["bad_gateway"],
        )

    def status_fields(self) -> dict[str, object]:
        """For the debug socket's ``status``: what /ping says now, and the traffic so far."""
        ok, why = self.ready()
        return {
            "serve_front": {
                "port": self.config.port,
                "server_port": self.config.backend_port,
                "ping": 200 if ok else 503,
                "state": self._state(),
                "why": why or None,
                "in_flight": len(self.in_flight),
                "connections": len(self.connections),
                "workers_died": self.workers.died if self.workers is not None else None,
                **self.counts,
            }
        }

    # -- accepting -----------------------------------------------------------------------------
    def _accept(self) -> None:
        try:
            self._accept_some(ACCEPT_BATCH)
        except Exception as error:
            self.fault("accept", error)

    def _accept_some(self, limit: int | None) -> None:
        loop = asyncio.get_running_loop()
        count = 0
        while self.sock is not None and (limit is None or count < limit):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE and kin: the next readiness tries again
                self.fault("accept", error)
                return
            count += 1
            conn.setblocking(False)
            task = loop.create_task(self._adopt(loop, conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _adopt(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(lambda: ClientConnection(self), conn)
        except Exception as error:
            conn.close()
            self.fault("accept", error)

    def _stop_accepting(self, sweep: bool) -> None:
        """No new connections: take those the kernel already accepted (``sweep``), then close."""
        sock, loop = self.sock, asyncio.get_running_loop()
        if sock is None:
            return
        loop.remove_reader(sock.fileno())
        if sweep:
            self._accept_some(None)
        self.sock = None
        sock.close()

    # -- /ping ---------------------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        """What /ping says now: ready, or why not."""
        if self.stopping:
            return False, "stopping: draining before the server's stop signal"
        if not self.server_running():
            return False, "your server is not running"
        if self.prober.state is State.READY:
            return True, ""
        return False, self.prober.reason()

    def ping(self, exchange: Exchange) -> None:
        ok, _ = self.ready()
        if ok or self.stopping or not self.server_running():
            self._answer_ping(exchange)
            return
        task = asyncio.get_running_loop().create_task(self._ping_fresh(exchange))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ping_fresh(self, exchange: Exchange) -> None:
        try:
            await self.prober.fresh()
            self._answer_ping(exchange)
        except Exception as error:
            self.fault("ping", error)
            exchange.client.abort()

    def _answer_ping(self, exchange: Exchange) -> None:
        if exchange.done:
            return
        ok, why = self.ready()
        if ok:
            exchange.respond(200, b"OK", [], b"")
            return
        body = orjson.dumps({"ready": False, "state": self._state(), "why": why})
        exchange.respond(503, b"Service Unavailable", [(b"Content-Type", b"application/json")], body)

    def _state(self) -> str:
        if self.stopping:
            return "stopping"
        if not self.server_running():
            return "exited"
        return self.prober.state.value

    # -- the relay's host ----------------------------------------------------------------------
    def opened(self, exchange: Exchange) -> None:
        self.in_flight.add(exchange)

    def finished(self, exchange: Exchange, access: Access) -> None:
        self.in_flight.discard(exchange)
        self.counts[access.outcome] = self.counts.get(access.outcome, 0) + 1
        self.access.record(access, exchange.local)
        if not self.in_flight:
            self._idle.set()

    def fault(self, where: str, error: BaseException) -> None:
        """An error inside the front: contained where it happened; logged once per place and kind."""
        key = f"{where}:{type(error).__name__}"
        if key in self._faults:
            return
        self._faults.add(key)
        self.log.error(
            "serve_front_error",
            where=where,
            error=repr(error),
            traceback="".join(traceback.format_exception(error))[-2000:],
            impact="this connection was closed; the front and the supervision go on",
        )

    def _connect_error(self, error: BaseException) -> None:
        self._connect_errors += 1

    # -- the draining stop ---------------------------------------------------------------------
    async def drain(self, advance: asyncio.Event) -> None:
        """/ping 503 at once; requests still taken for the drain delay; then no new connections and
        the requests in flight get the drain timeout; then the server may be signalled. A second
        SIGTERM/SIGINT (``advance``) ends each wait at once."""
        started = time.monotonic()
        try:
            self.stopping = True
            self.log.info(
                "serve_draining",
                drain_delay=self.config.drain_delay,
                drain_timeout=self.config.drain_timeout,
                in_flight=len(self.in_flight),
            )
            await _first(advance, None, self.config.drain_delay)
            self.closing = True
            self._stop_accepting(sweep=True)
            for connection in list(self.connections):
                connection.close_if_idle()
            self.upstreams.close()
            self.log.info("serve_listener_closed", in_flight=len(self.in_flight))
            self._idle.clear()
            if self.in_flight:
                await _first(advance, self._idle, self.config.drain_timeout)
        except Exception as error:
            self.fault("drain", error)
        self.log.info(
            "serve_drained",
            seconds=round(time.monotonic() - started, 3),
            in_flight=len(self.in_flight),
            served=self.counts["ok"],
        )


async def _first(advance: asyncio.Event, other: asyncio.Event | None, timeout: float) -> None:
    """Until ``advance`` or ``other`` is set, or ``timeout`` seconds."""
    waits = [asyncio.ensure_future(advance.wait())]
    if other is not None:
        waits.append(asyncio.ensure_future(other.wait()))
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
