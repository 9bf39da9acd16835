"""The supervisors' mesh: each host's smsupervise tells every other one how its job ended.

Static rendezvous (what the toolkit's torchrun uses) never tells the other hosts that one failed:
their ranks wait in the next collective until the NCCL/Gloo timeout (10-30 minutes). Here every
smsupervise listens on ``--cluster-port`` (default 7778) at its own address and connects to every
other host of resourceconfig.json. The acceptor starts each connection with
``{"kind": "challenge", "nonce"}``; after that only the connector writes:

* ``{"kind": "hello", "host", "job", "mac"}`` once, the MAC over the nonce with the job's key
  (meshkey.py: derived on each host from what only the job's containers receive);
* then signed lines (meshkey.sign: a MAC over the nonce, a sequence number and the bytes):
  ``{"kind": "beat"}`` every ``--peer-timeout`` / 6 (at most every 5 s), while connected;
  ``{"kind": "failed", ...}`` when its job failed (host, first failing rank, headline, stderr tail,
  when), or ``{"kind": "done", ...}`` when it ended otherwise (MPI workers take the master's
  ``done`` as their own outcome).

An incoming connection from an address that is no job host's is closed at once, unread. One from a
host's address has ``HELLO_TIMEOUT`` to say that host, this job and the right MAC; at most
``PENDING_PER_ADDRESS`` such unproven connections per address and ``PENDING_TOTAL`` in all are
held (a new one crowds out the oldest), and one proven connection per host (a reconnect replaces
the old one): however many connections arrive, the mesh holds a bounded number of descriptors, and
when accept() itself finds none left it pauses instead of spinning. Refusals are logged
(``mesh_refused``) the first few times in each minute, with what they quote cut short, and the rest
counted (``mesh_refused_summary``). A report is decoded by a typed check: any field of the wrong
type or out of range, or one unknown, and it is refused, never acted on.

A clean EOF without a report means that host's smsupervise is gone (``on_lost``); a reset or a mesh
that never connects is only logged. A host that has said hello and then says nothing at all (no
heartbeat, on any connection) for ``--peer-timeout`` is presumed gone too (``on_silent``): its
smsupervise is stopped (SIGSTOP, a frozen container) or the network between the hosts is cut, and
its ranks will never answer a collective again. A busy or slow host still beats: its supervisor's
loop does not wait on the job. One line of JSON per message, orjson.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, NamedTuple

import orjson

from smsupervise.distributed import meshkey
from smsupervise.distributed.reports import (
    NAME_LIMIT,
    Report,
    check,
    quote,
    report_refusals,
    stranger_refusals,
)
from smsupervise.streams.events import EventLog

DEFAULT_PORT = 7778
HELLO_TIMEOUT = 3.0  # an unproven connection is closed after this long
HELLO_LIMIT = 1024  # bytes of a hello, at most
PENDING_PER_ADDRESS = 2  # unproven connections held per job host's address
PENDING_TOTAL = 32  # unproven connections held in all
ACCEPT_BATCH = 16  # connections accepted per wake-up of the loop
ACCEPT_PAUSE = 0.5  # when accept() fails (no descriptor left): wait before trying again
RETRY_FIRST = 0.05
RETRY_LONGEST = 2.0
LINE_LIMIT = 1 << 16
BEAT = b'{"kind":"beat"}'
BEAT_LONGEST = 5.0  # seconds between heartbeats at most


class _Pending(NamedTuple):
    address: str
    sock: socket.socket
    task: asyncio.Task[None]


class _Outgoing:
    """One connection to a peer: every line it sends is signed with the acceptor's nonce."""

    def __init__(self, writer: asyncio.StreamWriter, key: bytes, nonce: bytes) -> None:
        self.writer, self.key, self.nonce = writer, key, nonce
        self.seq = 0

    def send(self, body: bytes) -> None:
        line = meshkey.sign(self.key, self.nonce, self.seq, body.rstrip(b"\n"))
        self.seq += 1
        with contextlib.suppress(OSError, RuntimeError):
            self.writer.write(line)


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
        key: bytes = b"",
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
        self.key = key or meshkey.derive({}, job, list(addresses))
        self.heard: dict[str, float] = {}  # joined peer -> when it last said anything (monotonic)
        self.listener: socket.socket | None = None
        self.writers: dict[str, _Outgoing] = {}
        self.finished: set[str] = set()  # peers that reported or were lost: no reconnecting
        self.final: bytes | None = None
        self.closing = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.peer_addresses = {a for h, a in self.addresses.items() if h != me}
        self.pending: collections.OrderedDict[asyncio.Task[None], _Pending] = collections.OrderedDict()
        self.joined: dict[str, tuple[socket.socket, asyncio.Task[None]]] = {}  # proven, per host
        self.dropped: set[socket.socket] = set()  # crowded out, its task not yet over
        self.refusals = stranger_refusals(log)
        self.bad_reports = report_refusals(log)  # from a peer with the key
        self.accept_paused = False

    async def start(self) -> None:
        """Listen at this host's address and start connecting to every peer (in the background)."""
        try:
            self.listener = self._listen_socket()
        except OSError as error:
            self.log.warning(
                "mesh_unavailable",
                port=self.port,
                error=str(error),
                impact="other hosts will not learn quickly that this host's job failed",
                fix="free the port or choose another with --cluster-port (the same on every host)",
            )
        else:
            asyncio.get_running_loop().add_reader(self.listener.fileno(), self._acceptable)
        for host in self.addresses:
            if host != self.me:
                self._spawn_task(self._connect(host))
        if self.silence > 0 and self.on_silent is not None:
            self._spawn_task(self._watch_silence())

    def _listen_socket(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.addresses[self.me], self.port))
            listener.listen(128)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        return listener

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

    def _spawn_task(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def announce(self, report: Report) -> None:
        """Tell every connected peer (and those that connect later) how this host's job ended."""
        self.final = report.encode()
        for outgoing in list(self.writers.values()):
            outgoing.send(self.final)

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the report is handed to the kernel for every peer."""
        drains = [o.writer.drain() for o in self.writers.values()]
        if drains:
            with contextlib.suppress(asyncio.TimeoutError, OSError):
                await asyncio.wait_for(asyncio.gather(*drains, return_exceptions=True), timeout)

    async def close(self) -> None:
        """Stop listening and connecting; close every connection."""
        self.closing = True
        if self.listener is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.listener.fileno())
            self.listener.close()
        for pending in self.pending.values():
            _shut(pending.sock)
        for sock, _ in self.joined.values():
            _shut(sock)
        for task in list(self.tasks):
            task.cancel()
        for outgoing in self.writers.values():
            outgoing.writer.close()
        self.writers.clear()
        if self.tasks:  # each incoming socket is closed as its task ends
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.refusals.flush()
        self.bad_reports.flush()

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
            try:
                nonce = await self._challenge(reader)
            except (OSError, ValueError, asyncio.TimeoutError):
                nonce = None
            if nonce is None:
                writer.close()
                await asyncio.sleep(min(RETRY_FIRST * 2.0**attempt, RETRY_LONGEST))
                attempt += 1
                continue
            began = time.monotonic()
            mac = meshkey.hello_mac(self.key, nonce, self.me, self.job)
            writer.write(
                orjson.dumps({"kind": "hello", "host": self.me, "job": self.job, "mac": mac}) + b"\n"
            )
            outgoing = _Outgoing(writer, self.key, nonce)
            if self.final is not None:
                outgoing.send(self.final)
            self.writers[host] = outgoing
            self.log.debug("mesh_connected", host=host, address=self.addresses[host], port=self.port)
            beating = asyncio.ensure_future(self._beat(outgoing))
            with contextlib.suppress(OSError):
                await reader.read()  # the peer writes nothing more: this returns when it closes
            beating.cancel()
            if self.writers.get(host) is outgoing:
                del self.writers[host]
            writer.close()
            if time.monotonic() - began < RETRY_LONGEST:  # refused at once (another key?): back off
                await asyncio.sleep(min(RETRY_FIRST * 2.0**attempt, RETRY_LONGEST))
                attempt += 1
            else:
                attempt = 0

    @staticmethod
    async def _challenge(reader: asyncio.StreamReader) -> bytes | None:
        """The acceptor's nonce (the first line it sends), or None if it is not one."""
        line = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
        data: Any = orjson.loads(line) if line else None
        nonce = data.get("nonce") if isinstance(data, dict) and data.get("kind") == "challenge" else None
        if not isinstance(nonce, str) or len(nonce) != 2 * meshkey.NONCE_BYTES:
            return None
        return bytes.fromhex(nonce)

    async def _beat(self, outgoing: _Outgoing) -> None:
        """Say "still here" on one connection until it closes (writes never wait on the peer)."""
        while not outgoing.writer.is_closing():
            await asyncio.sleep(self.beat_interval)
            outgoing.send(BEAT)

    # -- incoming: the peers' reports ---------------------------------------------------------------
    def _acceptable(self) -> None:
        """The listening socket is readable: accept a batch; strangers are closed unread."""
        assert self.listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except (ConnectionAbortedError, ConnectionResetError):
                continue  # gone before it was accepted
            except OSError as error:
                self._pause_accepting(error)
                return
            self.accept_paused = False
            address = str(peer[0])
            if address not in self.peer_addresses:
                sock.close()
                self.refusals.note(address, "not the address of a host of this job")
                continue
            sock.setblocking(False)
            self._make_room(address)
            task: asyncio.Task[None] = self._spawn_task(self._incoming(sock, address))
            # Closed once its task is over (even one cancelled before it ran), never under a
            # pending sock_recv (the loop would still watch the number, soon someone else's).
            task.add_done_callback(lambda _, sock=sock: sock.close())  # type: ignore[misc]
            self.pending[task] = _Pending(address, sock, task)

    def _pause_accepting(self, error: OSError) -> None:
        """accept() failed (no descriptor left, no memory): stop watching the socket for a moment,
        so that the connections waiting in the backlog do not spin the loop."""
        loop = asyncio.get_running_loop()
        assert self.listener is not None
        loop.remove_reader(self.listener.fileno())
        if not self.accept_paused:  # once per episode: it may last while the fds are gone
            self.log.warning(
                "mesh_accept_paused",
                error=str(error),
                pause_s=ACCEPT_PAUSE,
                impact="connections wait in the kernel's backlog; accepting resumes when it can",
            )
        self.accept_paused = True

        def resume() -> None:
            if not self.closing and self.listener is not None:
                loop.add_reader(self.listener.fileno(), self._acceptable)

        loop.call_later(ACCEPT_PAUSE, resume)

    def _make_room(self, address: str) -> None:
        """Before holding one more unproven connection: the oldest from that address, or overall,
        goes if the bound is reached."""
        same = [p for p in self.pending.values() if p.address == address]
        if len(same) >= PENDING_PER_ADDRESS:
            self._drop(same[0], "crowded out by newer connections from the same address")
        elif len(self.pending) >= PENDING_TOTAL:
            self._drop(next(iter(self.pending.values())), "crowded out: too many unproven connections")

    def _drop(self, pending: _Pending, why: str) -> None:
        self.pending.pop(pending.task, None)
        self.dropped.add(pending.sock)
        _shut(pending.sock)
        self.refusals.note(pending.address, why)

    async def _incoming(self, sock: socket.socket, address: str) -> None:
        """One incoming connection: challenge, hello, then the peer's signed lines. An unproven
        connection is ended by shutting its socket down (its read then sees EOF at once): a timer
        at ``HELLO_TIMEOUT``, or a newer connection crowding it out. Never by cancelling (a
        cancellation can be lost in wait_for on Python < 3.12, and the socket would be held on)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        deadline = loop.call_later(HELLO_TIMEOUT, _shut, sock)
        try:
            nonce = os.urandom(meshkey.NONCE_BYTES)
            challenge = orjson.dumps({"kind": "challenge", "nonce": nonce.hex()}) + b"\n"
            lines = _Lines(sock)
            try:
                await loop.sock_sendall(sock, challenge)
                hello = await lines.next(HELLO_LIMIT)
            except (OSError, ValueError) as error:
                hello, problem = None, f" ({error!r:.40})"
            else:
                problem = "" if hello is not None else f" (it said nothing within {HELLO_TIMEOUT:g} s)"
            deadline.cancel()
            if sock in self.dropped:
                return  # crowded out: already counted
            if hello is None:
                self.refusals.note(address, f"no hello from a supervisor{problem}")
                return
            host = self._proven(hello, nonce, address)
            if host is None:
                return
            self.pending.pop(task, None)
            previous = self.joined.get(host)
            if previous is not None:  # a reconnect: the newer connection is the one that counts
                _shut(previous[0])
            self.joined[host] = (sock, task)
            self.heard[host] = time.monotonic()
            await self._listen(lines, host, nonce, address, sock)
        except asyncio.CancelledError:
            return  # closing: nothing to report
        finally:
            deadline.cancel()
            self.pending.pop(task, None)
            self.dropped.discard(sock)
            for joined_host, (held, _) in list(self.joined.items()):
                if held is sock:
                    del self.joined[joined_host]

    def _proven(self, line: bytes | None, nonce: bytes, address: str) -> str | None:
        """The host a hello proves to be (a peer at its own address, this job, the right MAC)."""
        try:
            hello: Any = orjson.loads(line) if line else None
        except orjson.JSONDecodeError:
            hello = None
        fields = ("kind", "host", "job", "mac")
        if (
            not isinstance(hello, dict)
            or set(hello) != set(fields)
            or not all(isinstance(hello[f], str) and len(hello[f]) <= NAME_LIMIT for f in fields)
        ):
            self.refusals.note(address, f"not a supervisor's hello: {quote(line)}")
            return None
        host, job = hello["host"], hello["job"]
        if host == self.me or self.addresses.get(host) != address or job != self.job:
            why = f"says it is {quote(host)} of job {quote(job)}, not a peer of this job at that address"
            self.refusals.note(address, why)
            return None
        if not meshkey.hello_ok(self.key, nonce, host, job, hello["mac"]):
            self.refusals.note(address, f"says it is {host} but does not have this job's key")
            return None
        return str(host)

    async def _listen(
        self, lines: _Lines, host: str, nonce: bytes, address: str, sock: socket.socket
    ) -> None:
        reported, seq = False, 0
        try:
            while (line := await lines.next(LINE_LIMIT)) is not None:
                body = meshkey.verify(self.key, nonce, seq, line)
                if body is None:
                    self.refusals.note(address, f"a line from {host} without a valid MAC: connection closed")
                    return
                seq += 1
                self.heard[host] = time.monotonic()
                if body == BEAT:
                    continue
                report = check(body)
                if isinstance(report, str) or report.host != host:
                    why = report if isinstance(report, str) else f"a report for {quote(report.host)}"
                    self.bad_reports.note(address, f"from {host}, not acted on: {why}")
                    continue
                reported = True
                self.finished.add(host)
                self.on_report(report)
        except (OSError, ValueError) as error:
            self.log.info(
                "mesh_peer_unreachable", host=host, error=str(error), impact="none: the job goes on"
            )
            return
        replaced = self.joined.get(host, (None, None))[0] is not sock  # a reconnect took over
        if not reported and not replaced and not self.closing and host not in self.finished:
            self.finished.add(host)
            self.on_lost(host)


def _shut(sock: socket.socket) -> None:
    """End a connection without closing its descriptor (its task may still be reading it: the read
    sees EOF, the task ends, and only then is the descriptor closed)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Lines:
    """Lines from a non-blocking socket, each at most ``limit`` bytes (else ValueError)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    async def next(self, limit: int) -> bytes | None:
        """The next line (with its newline); None at a clean EOF."""
        loop = asyncio.get_running_loop()
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line, self.buffer = self.buffer[: end + 1], self.buffer[end + 1 :]
                if len(line) > limit:
                    raise ValueError(f"a line of more than {limit} bytes")
                return line
            if len(self.buffer) > limit:
                raise ValueError(f"a line of more than {limit} bytes")
            data = await loop.sock_recv(self.sock, LINE_LIMIT)
            if not data:
                if self.buffer:
                    raise ValueError("the connection ended inside a line")
                return None
            self.buffer += data


def now() -> float:
    """Wall-clock seconds, comparable across hosts (for 'which rank failed first')."""
    return time.time()
