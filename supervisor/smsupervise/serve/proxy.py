"""The relay between SageMaker's connections and the server's: HTTP/1.1 read with httptools (the
parser uvicorn uses), never by hand.

One ``ClientConnection`` per accepted connection parses requests; each request is an ``Exchange``,
relayed over an ``Upstream`` connection to the server (kept alive and reused, ``Upstreams``). Heads
are rebuilt from the parsed parts with every header as it came (names, values, order); bodies are
passed on piece by piece as they arrive, chunked ones re-chunked piece for piece, so a streamed
response reaches the client chunk by chunk and a large body never sits whole in memory: when one
side cannot take more, the other side's reading is paused (asyncio's flow control), so at most a
transport's buffer is held per direction.

A client that goes away (EOF or reset) while its request is in flight has its server connection
closed at once (the server sees the disconnect). ``/ping`` is answered by the front (``Host.ping``).

Every callback from the loop is wrapped: an error in this module closes the one connection it
happened on and is logged (``Host.fault``); it never propagates to the supervisor's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol, cast

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
    HttpResponseParser,
)

from smsupervise.serve.access import Access
from smsupervise.serve.config import BACKEND_HOST

PING = b"/ping"
PIPELINE_LIMIT = 16  # parsed requests waiting behind the one in flight on a connection
PENDING_LIMIT = 1 << 20  # request bytes held for a request not yet sent before reading pauses
RETRY_BODY_LIMIT = 64 << 10  # a request this small is resent once when a reused connection was stale
HOP_BY_HOP_CLOSE = (b"connection", b"keep-alive")


class Host(Protocol):
    """What the relay needs from the front (``front.Front``)."""

    paths: Mapping[bytes, bytes]
    upstreams: Upstreams
    connections: set[ClientConnection]
    closing: bool  # no new requests: each connection closes after its current response

    def ping(self, exchange: Exchange) -> None: ...
    def opened(self, exchange: Exchange) -> None: ...
    def finished(self, exchange: Exchange, access: Access) -> None: ...
    def fault(self, where: str, error: BaseException) -> None: ...


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _head(first_line: bytes, headers: list[tuple[bytes, bytes]], close: bool) -> bytes:
    """A message head: the first line, every header as it came (``close``: our Connection: close
    instead of the hop-by-hop connection headers), the blank line."""
    parts = [first_line]
    for name, value in headers:
        if close and name.lower() in HOP_BY_HOP_CLOSE:
            continue
        parts += [name, b": ", value, b"\r\n"]
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Exchange:
    """One request and its response."""

    def __init__(  # noqa: PLR0917 - the parsed parts of one request
        self,
        client: ClientConnection,
        method: bytes,
        url: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> None:
        self.client = client
        self.method = method
        self.url = url
        self.path = url.split(b"?", 1)[0]
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = b"chunked" in (_header(headers, b"transfer-encoding") or b"").lower()
        self.started = time.monotonic()
        self.upstream: Upstream | None = None
        self.pending: list[bytes] = []  # request bytes waiting for the upstream connection
        self.pending_size = 0
        self.sent: list[bytes] | None = []  # what went upstream, kept for one retry while small
        self.sent_size = 0
        self.request_done = False
        self.response_started = False
        self.response_chunked = False
        self.close_after = False
        self.status: int | None = None
        self.bytes_out = 0
        self.done = False
        self.local = False  # answered by the front (/ping)

    @property
    def ping(self) -> bool:
        return self.path == PING and self.method in (b"GET", b"HEAD")

    # -- the request -------------------------------------------------------------------------
    def start(self) -> None:
        """This exchange's turn on its connection: answer it here, or send it to the server."""
        host = self.client.host
        host.opened(self)
        if self.ping:
            self.local = True
            if self.request_done:
                host.ping(self)
            return
        target = host.paths.get(self.path)
        url = self.url if target is None else target + self.url[len(self.path) :]
        head = _head(b"%b %b HTTP/1.1\r\n" % (self.method, url), self.headers, close=False)
        # A pipelined request's body may have come before its turn: the head goes first.
        self.pending.insert(0, head)
        if self.sent is not None:
            self.sent.insert(0, head)
            self.sent_size += len(head)
        upstream = host.upstreams.take()
        if upstream is not None:
            self.attach(upstream, reused=True)
        else:
            self.client.pause("connect")
            host.upstreams.connect(self)

    def attach(self, upstream: Upstream, reused: bool) -> None:
        """A server connection is ours: send what waited for it."""
        self.upstream = upstream
        upstream.attach(self, reused)
        pending, self.pending, self.pending_size = self.pending, [], 0
        upstream.write(b"".join(pending))
        self.client.resume("connect")
        if len(self.client.queue) == 1:
            self.client.resume("pipeline")

    def _send(self, data: bytes) -> None:
        if self.done:  # answered before its body ended (e.g. 413): the rest is dropped
            return
        if self.sent is not None:
            self.sent.append(data)
            self.sent_size += len(data)
            if self.sent_size > RETRY_BODY_LIMIT:
                self.sent = None
        if self.upstream is None:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > PENDING_LIMIT:  # a pipelined request waiting its turn
                self.client.pause("pipeline")
        else:
            self.upstream.write(data)

    def request_body(self, data: bytes) -> None:
        if self.local:
            return
        self._send(_chunk(data) if self.chunked else data)

    def request_complete(self) -> None:
        self.request_done = True
        if self.local:
            if self.client.active is self:
                self.client.host.ping(self)
            return
        if self.chunked:
            self._send(b"0\r\n\r\n")

    def retry(self) -> bool:
        """A reused server connection was closed before any answer: send the request again on a
        new one, if it is all kept (small and complete)."""
        if self.sent is None or not self.request_done or self.response_started:
            return False
        self.upstream = None
        self.pending, self.sent = list(self.sent), None
        self.client.pause("connect")
        self.client.host.upstreams.connect(self)
        return True

    # -- the response ------------------------------------------------------------------------
    def respond(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes, outcome: str = "ok"
    ) -> None:
        """A whole response made here (``/ping``, 502)."""
        headers = [*headers, (b"Content-Length", b"%d" % len(body))]
        self.response_head(b"HTTP/1.1 %d %b\r\n" % (status, reason), status, headers, chunked=False)
        if body and self.method != b"HEAD":
            self.response_body(body)
        self.response_complete(outcome=outcome)

    def response_head(
        self, first_line: bytes, status: int, headers: list[tuple[bytes, bytes]], chunked: bool
    ) -> None:
        self.response_started = True
        self.status = status
        self.response_chunked = chunked
        self.close_after = not self.keep_alive or self.client.host.closing
        self.client.write(_head(first_line, headers, close=self.client.host.closing))

    def response_interim(self, first_line: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """A 1xx (100 Continue): passed on; the real response follows."""
        self.client.write(_head(first_line, headers, close=False))

    def response_body(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.client.write(_chunk(data) if self.response_chunked else data)

    def response_complete(self, server_keeps_alive: bool = True, outcome: str = "ok") -> None:
        if self.response_chunked:
            self.client.write(b"0\r\n\r\n")
        self.close_after = self.close_after or not server_keeps_alive or self.client.host.closing
        self.finish(outcome)
        self.client.next_exchange(self)

    def finish(self, outcome: str) -> None:
        """Count and log this exchange once."""
        if self.done:
            return
        self.done = True
        status = self.status if self.response_started else None
        latency = time.monotonic() - self.started
        access = Access(
            self.method.decode("latin-1"),
            self.path.decode("latin-1"),
            status,
            self.bytes_out,
            latency,
            outcome,
        )
        self.client.host.finished(self, access)

    def fail(self, outcome: str, why: str) -> None:
        """The server connection failed: a 502 if nothing was answered yet, else the client's
        connection is cut (it cannot be told otherwise)."""
        if self.done:
            return
        if not self.response_started and outcome == "bad_gateway":
            body = b'{"error": "bad gateway", "why": "%b"}' % why.encode("utf-8", "replace").replace(
                b'"', b"'"
            )
            self.close_after = True
            self.respond(502, b"Bad Gateway", [(b"Content-Type", b"application/json")], body, outcome)
            return
        self.finish(outcome)
        self.client.abort()

    def client_gone(self) -> None:
        """The client went away: pass it on to the server (close its connection)."""
        if self.done:
            return
        self.finish("client_gone")
        if self.upstream is not None:
            self.upstream.abort()


class ClientConnection(asyncio.Protocol):
    """One connection from SageMaker (or whoever calls the port)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.parser = HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.queue: deque[Exchange] = deque()  # the first is in flight
        self.parsing: Exchange | None = None  # the request whose body is being read
        self.paused: set[str] = set()  # why reading is paused
        self.corked: list[bytes] | None = None  # writes held until the end of a server's read
        self.closed = False

    @property
    def active(self) -> Exchange | None:
        return self.queue[0] if self.queue else None

    # -- asyncio's callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        self.host.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError as error:  # our callback failed, not the client's bytes
            self.host.fault("request", error.__context__ or error)
            self.abort()
        except HttpParserUpgrade:
            self._refuse(b"501 Not Implemented", b"protocol upgrades are not passed through")
        except HttpParserError as error:
            self._refuse(b"400 Bad Request", str(error).encode("utf-8", "replace"))
        except Exception as error:
            self.host.fault("request", error)
            self.abort()

    def eof_received(self) -> bool:
        try:
            for exchange in list(self.queue):
                exchange.client_gone()
        except Exception as error:
            self.host.fault("client eof", error)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.host.connections.discard(self)
        try:
            for exchange in list(self.queue):
                exchange.client_gone()
        except Exception as error:
            self.host.fault("client lost", error)
        self.queue.clear()

    def pause_writing(self) -> None:
        active = self.active
        if active is not None and active.upstream is not None:
            active.upstream.pause_reading()

    def resume_writing(self) -> None:
        active = self.active
        if active is not None and active.upstream is not None:
            active.upstream.resume_reading()

    # -- httptools' callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = Exchange(
            self,
            self.parser.get_method(),
            self.url,
            self.parser.get_http_version(),
            self.headers,
            self.parser.should_keep_alive(),
        )
        self.queue.append(exchange)
        self.parsing = exchange
        if len(self.queue) == 1:
            exchange.start()
        elif len(self.queue) > PIPELINE_LIMIT:
            self.pause("pipeline")

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.request_body(body)

    def on_message_complete(self) -> None:
        parsing, self.parsing = self.parsing, None
        if parsing is not None:
            parsing.request_complete()

    # -- ours ----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.corked is not None:
            self.corked.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def cork(self) -> None:
        """Hold writes until ``uncork``: what one read of the server's answer produced (head, body,
        chunk end) leaves in one send, not one each."""
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        held, self.corked = self.corked, None
        if held:
            self.write(b"".join(held))

    def pause(self, why: str) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.paused.add(why)

    def resume(self, why: str) -> None:
        if why not in self.paused:
            return
        self.paused.discard(why)
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def next_exchange(self, done: Exchange) -> None:
        """``done``'s response is complete: close, or start the next request on this connection."""
        if self.queue and self.queue[0] is done:
            self.queue.popleft()
        if done.close_after or self.host.closing:
            self.close()
            return
        self.resume("pipeline")
        if self.queue:
            self.queue[0].start()

    def close_if_idle(self) -> None:
        """The front stopped taking requests: an idle connection closes now, the others after their
        current response (``Host.closing``)."""
        if not self.queue:
            self.close()

    def close(self) -> None:
        self.uncork()  # what is held goes out before the close
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
            self.host.connections.discard(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()
            self.host.connections.discard(self)

    def _refuse(self, status: bytes, why: bytes) -> None:
        """A request that cannot be parsed: 400 (or 501) if nothing is in flight, then close."""
        if self.queue and self.queue[0].response_started:
            self.abort()
            return
        for exchange in list(self.queue):
            exchange.client_gone()
        self.queue.clear()
        body = why[:200]
        self.write(
            b"HTTP/1.1 %b\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%b"
            % (status, len(body), body)
        )
        self.close()


class Upstream(asyncio.Protocol):
    """One connection to the server, carrying one exchange at a time."""

    def __init__(self, pool: Upstreams) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.reused = False
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.closed = False
        self.delimited_by_close = False

    def attach(self, exchange: Exchange, reused: bool) -> None:
        self.exchange = exchange
        self.reused = reused

    def write(self, data: bytes) -> None:
        if self.transport is not None and data and not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio's callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        client = self.exchange.client if self.exchange is not None else None
        if client is not None:
            client.cork()
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError as error:  # our callback failed, not the server's bytes
            self.pool.host.fault("response", error.__context__ or error)
            self._failed("cut", "smsupervise's front failed on this response")
        except HttpParserError as error:
            self._failed("cut", f"the server's response cannot be parsed: {error}")
        except Exception as error:
            self.pool.host.fault("response", error)
            self._failed("cut", "smsupervise's front failed on this response")
        finally:
            if client is not None:
                client.uncork()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        exchange, self.exchange = self.exchange, None
        if exchange is None or exchange.done:
            return
        try:
            if self.delimited_by_close and exchange.response_started:
                exchange.response_complete(server_keeps_alive=False)
            elif self.reused and not exchange.response_started and exchange.retry():
                return
            else:
                why = "the server closed the connection" if exc is None else str(exc)
                exchange.fail("bad_gateway" if not exchange.response_started else "cut", why)
        except Exception as error:
            self.pool.host.fault("server lost", error)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.pause("upstream")

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume("upstream")

    # -- httptools' callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.reason = b""
        self.headers = []

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        status = self.parser.get_status_code()
        first = b"HTTP/%b %d %b\r\n" % (self.parser.get_http_version().encode(), status, self.reason)
        if 100 <= status < 200 and status != 101:
            exchange.response_interim(first, self.headers)
            return
        chunked = b"chunked" in (_header(self.headers, b"transfer-encoding") or b"").lower()
        no_body = exchange.method == b"HEAD" or status in (204, 304)
        self.delimited_by_close = (
            not chunked and not no_body and _header(self.headers, b"content-length") is None
        )
        exchange.response_head(first, status, self.headers, chunked)
        if exchange.method == b"HEAD":  # httptools would wait for the body a HEAD answer has not
            self.exchange = None
            self.abort()
            exchange.response_complete(server_keeps_alive=False)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None or not exchange.response_started:
            return  # a 1xx: the real response follows
        self.exchange = None
        server_keeps = self.parser.should_keep_alive() and not self.delimited_by_close
        # A request still sending its body when the answer came would confuse the next one here.
        if server_keeps and exchange.request_done and not self.pool.host.closing:
            self.pool.give_back(self)
        else:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        exchange.response_complete(server_keeps_alive=server_keeps and exchange.request_done)

    def _failed(self, outcome: str, why: str) -> None:
        exchange, self.exchange = self.exchange, None
        self.abort()
        if exchange is not None:
            exchange.fail(outcome if exchange.response_started else "bad_gateway", why)


class Upstreams:
    """The server's connections: idle ones kept for reuse, new ones opened when none is idle."""

    def __init__(self, host: Host, port: int, on_connect_error: Callable[[BaseException], None]) -> None:
        self.host = host
        self.port = port
        self.idle: list[Upstream] = []
        self.on_connect_error = on_connect_error

    def take(self) -> Upstream | None:
        while self.idle:
            upstream = self.idle.pop()
            if not upstream.closed:
                return upstream
        return None

    def give_back(self, upstream: Upstream) -> None:
        self.idle.append(upstream)

    def forget(self, upstream: Upstream) -> None:
        if upstream in self.idle:
            self.idle.remove(upstream)

    def connect(self, exchange: Exchange) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.create_connection(lambda: Upstream(self), BACKEND_HOST, self.port))
        task.add_done_callback(lambda done: self._connected(done, exchange))

    def _connected(
        self, task: asyncio.Task[tuple[asyncio.BaseTransport, Upstream]], exchange: Exchange
    ) -> None:
        try:
            if task.cancelled():
                exchange.fail("bad_gateway", "the connection to the server was cancelled")
                return
            error = task.exception()
            if error is not None:
                self.on_connect_error(error)
                exchange.client.resume("connect")
                exchange.fail("bad_gateway", f"cannot connect to your server on port {self.port}: {error}")
                return
            upstream = task.result()[1]
            if exchange.done or exchange.client.closed:
                upstream.abort()
                return
            exchange.attach(upstream, reused=False)
        except Exception as error:
            self.host.fault("connect", error)
            exchange.client.abort()

    def close(self) -> None:
        for upstream in self.idle:
            upstream.abort()
        self.idle.clear()
