"""The supervisors' mesh: each host's smsupervise tells every other one how its job ended.

Static rendezvous (what the toolkit's torchrun uses) never tells the other hosts that one failed:
their ranks wait in the next collective until the NCCL/Gloo timeout (10-30 minutes). Here every
smsupervise listens on ``--cluster-port`` (default 7778) at its own address and connects to every
other host of resourceconfig.json. Each host writes on its outgoing connections only:

* ``{"kind": "hello", "host", "job"}`` once connected;
* ``{"kind": "beat"}`` every ``--peer-timeout`` / 6 (at most every 5 s), while connected;
* ``{"kind": "failed", ...}`` when its job failed (host, first failing rank, headline, stderr tail,
  when), or ``{"kind": "done", ...}`` when it ended otherwise (MPI workers take the master's
  ``done`` as their own outcome).

An incoming connection is accepted only from the address a job host resolves to, saying that host
and this job; anything else is closed at once (``mesh_refused``). A clean EOF without a report
means that host's smsupervise is gone (``on_lost``); a reset or a mesh that never connects is only
logged. A host that has said hello and then says nothing at all (no heartbeat, on any connection)
for ``--peer-timeout`` is presumed gone too (``on_silent``): its smsupervise is stopped (SIGSTOP, a
frozen container) or the network between the hosts is cut, and its ranks will never answer a
collective again. A busy or slow host still beats: its supervisor's loop does not wait on the job.
One line of JSON per message, orjson.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import orjson

from smsupervise.streams.events import EventLog

DEFAULT_PORT = 7778
HELLO_TIMEOUT = 5.0
RETRY_FIRST = 0.05
RETRY_LONGEST = 2.0
LINE_LIMIT = 1 << 16
BEAT = b'{"kind":"beat"}\n'
BEAT_LONGEST = 5.0  # seconds between heartbeats at most

Kind = Literal["failed", "done"]


class Report(NamedTuple):
    """How a host's job ended, as told to the others."""

    kind: Kind
    host: str
    exit_code: int
    headline: str
    at: float  # epoch seconds: when the first rank failed (or the job ended)
    rank: int | None = None
    local_rank: int | None = None
    tail: str = ""  # the failing rank's last stderr lines

    def encode(self) -> bytes:
        return orjson.dumps(self._asdict()) + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Report | None:
        """A report from one line; None for anything malformed."""
        try:
            data: Any = orjson.loads(line)
            report = cls(**data)
        except (orjson.JSONDecodeError, TypeError):
            return None
        return report if report.kind in ("failed", "done") else None


class Mesh:
    """The TCP mesh of one host. ``await start()``, then ``announce()`` once; ``close()`` at the end."""

    def __init__(  # noqa: PLR0917 - the mesh's whole configuration
        self,
        addresses: Mapping[str, str],
        me: str,
        port: int,
        job: str,
        log: EventLog,
        on_report: Callable[[Report], None],
        on_lost: Callable[[str], None],
        silence: float = 0.0,
        on_silent: Callable[[str], None] | None = None,
    ) -> None:
        self.addresses = dict(addresses)  # every host of the job (this one too) -> its address
        self.me = me
        self.port = port
        self.job = job
        self.log = log
        self.on_report = on_report
        self.on_lost = on_lost
        self.silence = silence  # seconds without a word from a joined peer: presumed gone; 0: never
        self.on_silent = on_silent
        self.heard: dict[str, float] = {}  # joined peer -> when it last said anything (monotonic)
        self.server: asyncio.AbstractServer | None = None
        self.writers: dict[str, asyncio.StreamWriter] = {}
        self.finished: set[str] = set()  # peers that reported or were lost: no reconnecting
        self.final: bytes | None = None
        self.closing = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.incoming: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen at this host's address and start connecting to every peer (in the background)."""
        try:
            self.server = await asyncio.start_server(
                self._accept, self.addresses[self.me], self.port, reuse_address=True, limit=LINE_LIMIT
            )
        except OSError as error:
            self.log.warning(
                "mesh_unavailable",
                port=self.port,
                error=str(error),
                impact="other hosts will not learn quickly that this host's job failed",
                fix="free the port or choose another with --cluster-port (the same on every host)",
            )
        for host in self.addresses:
            if host != self.me:
                self._spawn_task(self._connect(host))
        if self.silence > 0 and self.on_silent is not None:
            self._spawn_task(self._watch_silence())

    @property
    def beat_interval(self) -> float:
        return min(self.silence / 6, BEAT_LONGEST) if self.silence > 0 else BEAT_LONGEST

    async def _watch_silence(self) -> None:
        """Every joined, unfinished peer must have said something within ``silence`` seconds."""
        assert self.on_silent is not None
        last = time.monotonic()
        while not self.closing:
            await asyncio.sleep(self.beat_interval)
            now, late = time.monotonic(), time.monotonic() - last - self.beat_interval
            last = now
            if late > self.silence / 2:
                # This host was stopped itself (SIGSTOP, a frozen container): its peers' words wait
                # unread in the sockets. They get a fresh bound instead of the blame.
                self.heard = dict.fromkeys(self.heard, now)
                continue
            for host, heard in list(self.heard.items()):
                if host not in self.finished and now - heard > self.silence and not self.closing:
                    self.finished.add(host)
                    self.on_silent(host)

    def _spawn_task(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def announce(self, report: Report) -> None:
        """Tell every connected peer (and those that connect later) how this host's job ended."""
        self.final = report.encode()
        for writer in list(self.writers.values()):
            with contextlib.suppress(OSError, RuntimeError):
                writer.write(self.final)

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the report is handed to the kernel for every peer."""
        drains = [w.drain() for w in self.writers.values()]
        if drains:
            with contextlib.suppress(asyncio.TimeoutError, OSError):
                await asyncio.wait_for(asyncio.gather(*drains, return_exceptions=True), timeout)

    async def close(self) -> None:
        """Stop listening and connecting; close every connection."""
        self.closing = True
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for writer in [*self.writers.values(), *self.incoming]:
            writer.close()
        self.writers.clear()
        if self.server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), HELLO_TIMEOUT)
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- outgoing: this host's reports --------------------------------------------------------------
    async def _connect(self, host: str) -> None:
        attempt = 0
        while not self.closing and host not in self.finished:
            try:
                reader, writer = await asyncio.open_connection(
                    self.addresses[host], self.port, local_addr=(self.addresses[self.me], 0), limit=LINE_LIMIT
                )
            except OSError:
                await asyncio.sleep(min(RETRY_FIRST * 2.0**attempt, RETRY_LONGEST))
                attempt += 1
                continue
            attempt = 0
            hello = {"kind": "hello", "host": self.me, "job": self.job}
            writer.write(orjson.dumps(hello) + b"\n" + (self.final or b""))
            self.writers[host] = writer
            self.log.debug("mesh_connected", host=host, address=self.addresses[host], port=self.port)
            beating = asyncio.ensure_future(self._beat(writer))
            with contextlib.suppress(OSError):
                await reader.read()  # the peer never writes here: this returns when it closes
            beating.cancel()
            self.writers.pop(host, None)
            writer.close()

    async def _beat(self, writer: asyncio.StreamWriter) -> None:
        """Say "still here" on one connection until it closes (writes never wait on the peer)."""
        while not writer.is_closing():
            await asyncio.sleep(self.beat_interval)
            with contextlib.suppress(OSError, RuntimeError):
                writer.write(BEAT)

    # -- incoming: the peers' reports ---------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = str(writer.get_extra_info("peername")[0])
        self.incoming.add(writer)
        try:
            host = await self._hello(reader, address)
            if host is not None:
                await self._listen(reader, host)
        except asyncio.CancelledError:
            return  # the loop is closing: nothing to report (asyncio would log the cancellation)
        finally:
            self.incoming.discard(writer)
            writer.close()

    async def _hello(self, reader: asyncio.StreamReader, address: str) -> str | None:
        try:
            line = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
            hello: Any = orjson.loads(line)
            host, job = str(hello["host"]), str(hello.get("job", ""))
        except (asyncio.TimeoutError, OSError, ValueError, TypeError, KeyError):
            self.log.warning("mesh_refused", address=address, why="no hello from a supervisor")
            return None
        if host == self.me or self.addresses.get(host) != address or job != self.job:
            why = f"says it is {host!r} of job {job!r}, which is not a peer of this job at that address"
            self.log.warning("mesh_refused", address=address, why=why)
            return None
        self.heard[host] = time.monotonic()
        return host

    async def _listen(self, reader: asyncio.StreamReader, host: str) -> None:
        reported = False
        try:
            while line := await reader.readline():
                self.heard[host] = time.monotonic()
                report = Report.decode(line)
                if report is not None and report.host == host:
                    reported = True
                    self.finished.add(host)
                    self.on_report(report)
        except (OSError, ValueError) as error:
            self.log.info(
                "mesh_peer_unreachable", host=host, error=str(error), impact="none: the job goes on"
            )
            return
        if not reported and not self.closing and host not in self.finished:
            self.finished.add(host)
            self.on_lost(host)


def now() -> float:
    """Wall-clock seconds, comparable across hosts (for 'which rank failed first')."""
    return time.time()
