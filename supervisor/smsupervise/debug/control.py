"""The control socket: a Unix stream socket served on the supervisor's own event loop.

No thread and no cost while nobody is connected (one listening fd in the loop's epoll set). Every
connection's peer is checked with ``SO_PEERCRED`` before its request is read to the end of the
line: reading needs root or the supervisor's uid (or, with a reader group, that primary gid);
acting needs root or the supervisor's uid. The listening fd is close-on-exec (Python's default),
so it never reaches the job. The server knows nothing of the supervisor: it serves whatever
``Handler`` table it is given.

What a peer may hold is bounded (``Limits``): connections in total (also well below
RLIMIT_NOFILE), per process, and per uid other than the owner's and root's; one over the bound is
accepted, told why in one line and closed. A connection whose request has not arrived within
``REQUEST_TIMEOUT`` is closed (one timer each, no task); an empty one costs an accept and a close.
Accepting is done in batches (the loop's other work, the log relay, runs between them) and backs
off while the process is out of fds, instead of spinning on a listener that stays readable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import inspect
import os
import resource
import socket
import struct
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from smsupervise.debug.protocol import (
    MAX_LINE,
    OPERATIONS,
    Access,
    ProtocolError,
    Response,
    decode_request,
)

if TYPE_CHECKING:
    from smsupervise.streams.events import EventLog

AT_ONCE_PEEK = 65536  # a request line longer than this is served by the connection's task
REQUEST_TIMEOUT = 2.0  # seconds from the accept to the end of the request line
ACCEPT_BATCH = 16  # connections accepted per loop iteration: the relay runs between batches
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 1.0  # out of fds: stop accepting this long (doubling)
MAX_CONNECTIONS = 64
PER_PROCESS = 8
OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Limits(NamedTuple):
    """How many connections may be open at once: in all, from one process, from one uid other
    than the owner's and root's (a --control-group reader cannot crowd the owner out)."""

    total: int = MAX_CONNECTIONS
    per_process: int = PER_PROCESS
    per_other_uid: int = MAX_CONNECTIONS // 4

    @classmethod
    def for_this_process(cls) -> Limits:
        """The defaults, cut so that connections never take more than a quarter of the fds this
        process has left under RLIMIT_NOFILE (the stop and the job's output need the rest)."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            in_use = len(os.listdir("/proc/self/fd"))
        except OSError:
            in_use = 64
        left = soft - in_use if soft != resource.RLIM_INFINITY else MAX_CONNECTIONS * 4
        total = max(2, min(MAX_CONNECTIONS, left // 4))
        return cls(total, min(PER_PROCESS, total), max(1, total // 4))


class Peer(NamedTuple):
    """Who is at the other end of a connection, as the kernel says (``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int


class Policy(NamedTuple):
    """Who may do what: root and ``owner_uid`` everything; ``reader_gid`` (if set) may read."""

    owner_uid: int
    reader_gid: int | None = None

    def refusal(self, peer: Peer, access: Access) -> str | None:
        """None when ``peer`` may do ``access``, else the error the client is shown."""
        if peer.uid in (0, self.owner_uid):
            return None
        if access is Access.READ and self.reader_gid is not None and peer.gid == self.reader_gid:
            return None
        if access is Access.ACT and self.reader_gid is not None and peer.gid == self.reader_gid:
            return (
                f"permission denied: uid {peer.uid} (gid {peer.gid}) may read status and logs but not act; "
                f"run smsupervise-debug as uid {self.owner_uid} or root"
            )
        return (
            f"permission denied: uid {peer.uid} may not use this supervisor's control socket; "
            f"run smsupervise-debug as uid {self.owner_uid} or root"
        )


class HandlerError(Exception):
    """A request that cannot be served (e.g. no checkpoint step configured); the text is shown."""


Answer = Callable[[Mapping[str, Any], Peer], Any]
Stream = Callable[[Mapping[str, Any], Peer], AsyncIterator[Any]]


class Handler(NamedTuple):
    """How one operation is served: one answer, or a stream of items."""

    answer: Answer | None = None
    stream: Stream | None = None


def peer_of(sock: Any) -> Peer:
    """The connecting process's pid, uid and gid."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


class ControlServer:
    """Serves ``handlers`` on an already bound listening socket. ``start()`` once, ``aclose()`` once.

    It accepts connections itself, so every connection is a task it tracks from
    the moment it exists, and closing ends them all.
    """

    def __init__(
        self,
        sock: socket.socket,
        policy: Policy,
        handlers: Mapping[str, Handler],
        limits: Limits | None = None,
        log: EventLog | None = None,
    ) -> None:
        self.sock = sock
        self.path = str(sock.getsockname())
        self.policy = policy
        self.handlers = handlers
        self.limits = limits if limits is not None else Limits.for_this_process()
        self.log = log
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[int, socket.socket] = {}  # accepted, their request not there yet
        self._timers: dict[socket.socket, asyncio.TimerHandle] = {}  # REQUEST_TIMEOUT of the waiting
        self._open: dict[socket.socket, Peer] = {}  # every connection not yet closed
        self._by_pid: collections.Counter[int] = collections.Counter()
        self._by_uid: collections.Counter[int] = collections.Counter()
        self._backoff = 0.0  # > 0 while accepting is paused for want of fds
        self._resume: asyncio.TimerHandle | None = None
        self.refused = ""  # the last accept error, if any
        self.answered_at_once = 0  # requests answered in the accept callback itself
        self.over_limit = 0  # connections refused for a limit
        self.timed_out = 0  # connections closed for want of a request

    def start(self) -> None:
        """Begin accepting on the running loop: a reader callback on the listening fd."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting, end open connections, remove the socket file."""
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        if self._resume is not None:
            self._resume.cancel()
        for task in self._tasks:
            task.cancel()
        for fd, conn in list(self._waiting.items()):
            if self._loop is not None:
                self._loop.remove_reader(fd)
            self._close(conn)
        self._waiting.clear()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.sock.close()

    async def aclose(self) -> None:
        """``close()``, then wait until every connection has ended."""
        tasks = list(self._tasks)
        self.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    def counts(self) -> dict[str, object]:
        """For ``status``: connections open now, the bounds, and how many were turned away."""
        return {
            "open": len(self._open),
            "limits": self.limits._asdict(),
            "refused_over_limit": self.over_limit,
            "timed_out": self.timed_out,
        }

    # -- connections: accepted, counted, closed ------------------------------------------------
    def _accept(self) -> None:
        """Accept what is pending, a batch at a time; each connection is answered at once, or waits
        for its request in a reader callback (``_waiting``, with a timer), or is a task."""
        assert self._loop is not None
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()  # close-on-exec (accept4 with SOCK_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self.refused = str(error)
                if error.errno in OUT_OF_FDS:
                    self._pause(error)
                return
            self._backoff = 0.0
            conn.setblocking(False)
            try:
                peer = peer_of(conn)
            except OSError:  # gone already
                conn.close()
                continue
            over = self._over_limit(peer)
            if over is not None:
                self.over_limit += 1
                with contextlib.suppress(OSError):  # one line if the buffer takes it, never a wait
                    conn.send(Response(False, error=over).encode())
                conn.close()
                continue
            self._open[conn] = peer
            self._by_pid[peer.pid] += 1
            self._by_uid[peer.uid] += 1
            if not self._serve_at_once(conn, peer):  # not there yet: look again when it arrives
                self._waiting[conn.fileno()] = conn
                self._loop.add_reader(conn.fileno(), self._on_request, conn)
                self._timers[conn] = self._loop.call_later(REQUEST_TIMEOUT, self._expire, conn)

    def _over_limit(self, peer: Peer) -> str | None:
        """Why ``peer`` may not open one more connection now, or None."""
        limits = self.limits
        if len(self._open) >= limits.total:
            return f"too many connections to this supervisor ({limits.total} open): try again later"
        if self._by_pid[peer.pid] >= limits.per_process:
            return (
                f"too many connections from pid {peer.pid} ({limits.per_process} open): "
                "close some before opening more"
            )
        other = peer.uid not in (0, self.policy.owner_uid)
        if other and self._by_uid[peer.uid] >= limits.per_other_uid:
            return (
                f"too many connections from uid {peer.uid} ({limits.per_other_uid} open): "
                "close some before opening more"
            )
        return None

    def _pause(self, error: OSError) -> None:
        """Out of fds: the listener stays readable, so stop watching it for a while (doubling)
        rather than spin; the connections waiting in the backlog are accepted later."""
        assert self._loop is not None
        first = self._backoff == 0.0
        self._backoff = min(BACKOFF_MAX, self._backoff * 2 or BACKOFF_FIRST)
        self._loop.remove_reader(self.sock.fileno())
        self._resume = self._loop.call_later(self._backoff, self._resume_accepting)
        if first and self.log is not None:
            self.log.warning(
                "control_socket_paused",
                error=error.strerror or str(error),
                open_connections=len(self._open),
                impact="new connections wait until fds are free again",
            )

    def _resume_accepting(self) -> None:
        assert self._loop is not None
        self._resume = None
        if self.sock.fileno() >= 0:
            self._loop.add_reader(self.sock.fileno(), self._accept)

    def _close(self, conn: socket.socket) -> None:
        """Close ``conn`` and forget it (every close goes through here: the counts stay true)."""
        timer = self._timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
        peer = self._open.pop(conn, None)
        if peer is not None:
            for counter, key in ((self._by_pid, peer.pid), (self._by_uid, peer.uid)):
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]
        conn.close()

    def _expire(self, conn: socket.socket) -> None:
        """No request within REQUEST_TIMEOUT: closed, nothing answered."""
        assert self._loop is not None
        self._timers.pop(conn, None)
        if self._waiting.pop(conn.fileno(), None) is not None:
            self._loop.remove_reader(conn.fileno())
            self.timed_out += 1
            self._close(conn)

    def _on_request(self, conn: socket.socket) -> None:
        """The first bytes of a request arrived: answer at once, or hand over to a task."""
        assert self._loop is not None
        self._loop.remove_reader(conn.fileno())
        del self._waiting[conn.fileno()]
        timer = self._timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
        peer = self._open[conn]
        if not self._serve_at_once(conn, peer):  # a stream, an async handler, or a line cut in two
            self._track(conn, self._serve(conn, peer))

    def _track(self, conn: socket.socket, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` for ``conn`` as a task; the connection is closed when it ends."""
        assert self._loop is not None
        task = self._loop.create_task(work)
        task.add_done_callback(lambda done, conn=conn: self._ended(done, conn))  # type: ignore[misc]
        self._tasks.add(task)

    def _ended(self, task: asyncio.Task[None], conn: socket.socket) -> None:
        self._tasks.discard(task)
        self._close(conn)  # also when the task was cancelled before it ever ran
        if not task.cancelled() and task.exception() is not None:  # a bug: said once, no traceback
            self._failed(task.exception())

    def _failed(self, error: BaseException | None) -> None:
        if self.log is not None:
            self.log.error("control_request_failed", error=repr(error))

    # -- requests ------------------------------------------------------------------------------
    def _serve_at_once(self, conn: socket.socket, peer: Peer) -> bool:
        """Answer in this very callback when the request is already there and needs no waiting
        (``status`` while the relay is busy then costs one loop iteration, not five), or close an
        empty connection; False: it waits (nothing yet, or a stream). Closes ``conn`` (or hands
        it to a task sending the rest)."""
        line = _peek_line(conn)
        if line is None:
            return False
        if not line:  # closed without a word (or gone): costs nothing more
            self._close(conn)
            return True
        response = self._answer_now(peer, line)
        if response is None:
            return False
        self.answered_at_once += 1
        data = response.encode()
        try:
            conn.recv(len(line))  # taken off the queue: closing with unread data would reset the client
            sent = conn.send(data)
        except OSError:
            self._close(conn)
            return True
        if sent < len(data):  # a large answer: the rest as the socket takes it
            assert self._loop is not None
            self._track(conn, self._loop.sock_sendall(conn, data[sent:]))
        else:
            self._close(conn)
        return True

    def _answer_now(self, peer: Peer, line: bytes) -> Response | None:
        """The response to ``line`` when it needs no waiting: a refusal, a bad request, or a
        synchronous handler's answer; None for streams and asynchronous handlers."""
        refused = self.policy.refusal(peer, Access.READ)
        if refused is not None and self.policy.refusal(peer, Access.ACT) is not None:
            return Response(False, error=refused)
        try:
            request = decode_request(line)
        except ProtocolError as error:
            return Response(False, error=str(error))
        handler = self.handlers.get(request.op)
        refused = self.policy.refusal(peer, OPERATIONS[request.op])
        if refused is None and handler is None:
            refused = f"'{request.op}' is not available in this run"
        if refused is not None or handler is None:
            return Response(False, error=refused)
        if handler.answer is None or inspect.iscoroutinefunction(handler.answer):
            return None
        return self._call(handler.answer, request.args, peer)

    def _call(self, answer: Answer, args: Mapping[str, Any], peer: Peer) -> Response:
        """A synchronous handler's answer (handlers that wait are ``async def``)."""
        try:
            return Response(True, result=answer(args, peer))
        except HandlerError as error:
            return Response(False, error=str(error))
        except Exception as error:  # a bug in a handler: the client hears of it, the loop goes on
            self._failed(error)
            return Response(False, error=f"internal error: {error!r}")

    async def _serve(self, conn: socket.socket, peer: Peer) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=conn, limit=MAX_LINE)
        try:
            await self._one(peer, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass  # the client went away, or never finished its request: nothing to answer
        except Exception as error:  # a bug in a handler: said to the client if it still listens
            self._failed(error)
            with contextlib.suppress(Exception):
                await _send(writer, Response(False, error=f"internal error: {error!r}"))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _one(self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:  # read before refusing: the client's write succeeds
            line = await asyncio.wait_for(reader.readuntil(b"\n"), REQUEST_TIMEOUT)
        except asyncio.LimitOverrunError:
            await _send(writer, Response(False, error=f"request longer than {MAX_LINE} bytes"))
            return
        response = self._answer_now(peer, line)
        if response is not None:
            await _send(writer, response)
            return
        request = decode_request(line)  # it decoded in _answer_now
        handler = self.handlers[request.op]
        if handler.stream is not None:
            await self._stream(handler.stream, request.args, peer, writer)
            return
        assert handler.answer is not None
        try:
            result = await handler.answer(request.args, peer)
            await _send(writer, Response(True, result=result))
        except HandlerError as error:
            await _send(writer, Response(False, error=str(error)))

    async def _stream(
        self, stream: Stream, args: Mapping[str, Any], peer: Peer, writer: asyncio.StreamWriter
    ) -> None:
        items = stream(args, peer)
        try:
            async for item in items:
                await _send(writer, Response(True, item=item))
            await _send(writer, Response(True, end=True))
        except HandlerError as error:
            await _send(writer, Response(False, error=str(error)))
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()


def _peek_line(conn: socket.socket) -> bytes | None:
    """The request line already queued on ``conn`` (left there); None: not all there yet;
    ``b""``: the client closed without a word, or is gone."""
    try:
        peek = conn.recv(AT_ONCE_PEEK, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
    end = peek.find(b"\n")
    if not peek or end >= 0:
        return peek[: end + 1]
    return None


async def _send(writer: asyncio.StreamWriter, response: Response) -> None:
    writer.write(response.encode())
    await writer.drain()
