"""The control socket: a Unix stream socket served on the supervisor's own event loop.

No thread and no cost while nobody is connected (one listening fd in the loop's epoll set). Every
connection's peer is checked with ``SO_PEERCRED`` before its request is read to the end of the
line: reading needs root or the supervisor's uid (or, with a reader group, that primary gid);
acting needs root or the supervisor's uid. The listening fd is close-on-exec (Python's default),
so it never reaches the job. The server knows nothing of the supervisor: it serves whatever
``Handler`` table it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, NamedTuple

from smsupervise.debug.protocol import (
    MAX_LINE,
    OPERATIONS,
    Access,
    ProtocolError,
    Response,
    decode_request,
)

AT_ONCE_PEEK = 65536  # a request line longer than this is served by the connection's task


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

    def __init__(self, sock: socket.socket, policy: Policy, handlers: Mapping[str, Handler]) -> None:
        self.sock = sock
        self.path = str(sock.getsockname())
        self.policy = policy
        self.handlers = handlers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[int, socket.socket] = {}  # accepted, their request not there yet
        self.refused = ""  # the last accept error, if any
        self.answered_at_once = 0  # requests answered in the accept callback itself

    def start(self) -> None:
        """Begin accepting on the running loop: a reader callback on the listening fd."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting, end open connections, remove the socket file."""
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        for task in self._tasks:
            task.cancel()
        for fd, conn in self._waiting.items():
            if self._loop is not None:
                self._loop.remove_reader(fd)
            conn.close()
        self._waiting.clear()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.sock.close()

    async def aclose(self) -> None:
        """``close()``, then wait until every connection has ended."""
        tasks = list(self._tasks)
        self.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _accept(self) -> None:
        """Accept what is pending; each connection is answered at once, or waits for its request in
        a reader callback (``_waiting``), or is a task: tracked from the moment it exists."""
        assert self._loop is not None
        while True:
            try:
                conn, _ = self.sock.accept()  # close-on-exec (accept4 with SOCK_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE and friends: refuse this one, keep serving
                self.refused = str(error)
                return
            conn.setblocking(False)
            if not self._serve_at_once(conn):  # not there yet: look again when it arrives
                self._waiting[conn.fileno()] = conn
                self._loop.add_reader(conn.fileno(), self._on_request, conn)

    def _on_request(self, conn: socket.socket) -> None:
        """The first bytes of a request arrived: answer at once, or hand over to a task."""
        assert self._loop is not None
        self._loop.remove_reader(conn.fileno())
        del self._waiting[conn.fileno()]
        if not self._serve_at_once(conn):  # a stream, an async handler, or a line cut in two
            self._track(conn, self._serve(conn))

    def _track(self, conn: socket.socket, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` for ``conn`` as a task; the connection is closed when it ends."""
        assert self._loop is not None
        task = self._loop.create_task(work)
        task.add_done_callback(lambda done, conn=conn: self._ended(done, conn))  # type: ignore[misc]
        self._tasks.add(task)

    def _serve_at_once(self, conn: socket.socket) -> bool:
        """Answer in this very callback when the request is already there and needs no waiting
        (``status`` while the relay is busy then costs one loop iteration, not five); False: the
        connection's task serves it. Closes ``conn`` (or hands it to a task sending the rest)."""
        try:
            peek = conn.recv(AT_ONCE_PEEK, socket.MSG_PEEK)
        except OSError:  # nothing yet (EAGAIN), or the client is gone: the task finds out
            return False
        end = peek.find(b"\n")
        if end < 0:
            return False
        line = peek[: end + 1]
        response = self._answer_now(peer_of(conn), line)
        if response is None:
            return False
        self.answered_at_once += 1
        try:
            data = response.encode()
        except TypeError as error:  # a result JSON cannot hold: a bug, said to the client
            data = Response(False, error=f"internal error: {error}").encode()
        try:
            conn.recv(len(line))  # taken off the queue: closing with unread data would reset the client
            sent = conn.send(data)
        except OSError:
            conn.close()
            return True
        if sent < len(data):  # a large answer: the rest as the socket takes it
            assert self._loop is not None
            self._track(conn, self._loop.sock_sendall(conn, data[sent:]))
        else:
            conn.close()
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
        try:
            result = handler.answer(request.args, peer)  # handlers that wait are ``async def``
        except HandlerError as error:
            return Response(False, error=str(error))
        return Response(True, result=result)

    def _ended(self, task: asyncio.Task[None], conn: socket.socket) -> None:
        self._tasks.discard(task)
        conn.close()  # also when the task was cancelled before it ever ran

    async def _serve(self, conn: socket.socket) -> None:
        peer = peer_of(conn)
        reader, writer = await asyncio.open_unix_connection(sock=conn, limit=MAX_LINE)
        try:
            await self._one(peer, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _one(self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readuntil(b"\n")  # read before refusing: the client's write succeeds
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


async def _send(writer: asyncio.StreamWriter, response: Response) -> None:
    writer.write(response.encode())
    await writer.drain()
