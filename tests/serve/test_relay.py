"""Requests through the front reach the server as they were sent and come back as they were
answered: a streamed response chunk by chunk, a large body whole and intact, headers as they are, a
client's disconnect passed on, malformed requests refused without hurting the front."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import socket
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import events
from tests.serve.conftest import Endpoint, request, wait_line


def _read_until(sock: socket.socket, buffer: bytearray, marker: bytes) -> None:
    """Receive until ``marker`` is in ``buffer`` (the socket's timeout is the deadlock detector)."""
    while marker not in buffer:
        data = sock.recv(65536)
        assert data, f"connection closed before {marker!r}: {bytes(buffer)!r}"
        buffer += data


def _stop(endpoint: Endpoint) -> bytes:
    endpoint.run.signal(signal.SIGTERM)
    return endpoint.run.wait()[2]


def test_a_streamed_response_arrives_chunk_by_chunk(serve, tmp_path: Path) -> None:
    """The server sends chunk k+1 only after the test has seen chunk k through the front (a gate
    file per chunk): a front that buffered the response would never deliver chunk 0."""
    endpoint = serve(options=("--serve-drain-delay", "0"))
    endpoint.run.wait_event("serve_ready")
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=30) as sock:
        sock.sendall(b"GET /stream?gate=%b HTTP/1.1\r\nHost: x\r\n\r\n" % str(tmp_path).encode())
        received = bytearray()
        for k in range(3):
            _read_until(sock, received, b"part-%d\n" % k)
            assert b"part-%d" % (k + 1) not in received  # the next one is not sent yet
            (tmp_path / f"gate-{k}").touch()
        _read_until(sock, received, b"0\r\n\r\n")
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"7\r\npart-0\n\r\n7\r\npart-1\n\r\n7\r\npart-2\n\r\n0\r\n\r\n"
    _stop(endpoint)


def test_a_large_body_passes_whole(serve) -> None:
    """64 MiB up: the server counts every byte and its hash matches (the body streamed through)."""
    endpoint = serve(options=("--serve-drain-delay", "0"))
    endpoint.run.wait_event("serve_ready")
    body = hashlib.sha256(b"seed").digest() * (2 << 20)
    reply = request(endpoint.port, "POST", "/count", body)
    assert reply.body == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    err = _stop(endpoint)
    access = next(e for e in events(err) if e["event"] == "access" and e["path"] == "/count")
    assert (access["method"], access["status"]) == ("POST", 200)


def test_an_answer_before_the_body_ends_poisons_nothing(serve) -> None:
    """The server answers 413 to an 8 MiB request of which 1 MiB was sent; the client reads the
    413, then sends the rest: the front drops it (no error), and the requests after it (on new
    connections) get their own answers, whole and right."""
    endpoint = serve(options=("--serve-drain-delay", "0"))
    endpoint.run.wait_event("serve_ready")
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=30) as sock:
        sock.sendall(b"POST /reject HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (8 << 20))
        sock.sendall(b"\0" * (1 << 20))
        received = bytearray()
        _read_until(sock, received, b"\r\n\r\n")
        with contextlib.suppress(OSError):  # the front closes after the 413: fine
            for _ in range(7):
                sock.sendall(b"\0" * (1 << 20))
            while data := sock.recv(65536):
                received += data
    assert received.startswith(b"HTTP/1.1 413"), bytes(received)
    assert received.count(b"HTTP/1.1 ") == 1, bytes(received)  # nothing after it (a 400 was)
    for size in (0, 1000, 100_000):
        body = b"y" * size
        reply = request(endpoint.port, "POST", "/count", body)
        assert reply.body == f"{size} {hashlib.sha256(body).hexdigest()}".encode()
    records = events(_stop(endpoint))
    assert "serve_front_error" not in [e["event"] for e in records]
    reject = next(e for e in records if e["event"] == "access" and e["path"] == "/reject")
    assert reject["status"] == 413


def test_headers_pass_as_they_are(serve) -> None:
    """The server's headers come back with their names' case and order; the request's reach it."""
    endpoint = serve(options=("--serve-drain-delay", "0"))
    endpoint.run.wait_event("serve_ready")
    reply = request(endpoint.port, "POST", "/invocations?q=1", b"0")
    assert reply.headers["x-backend-path"] == "/invocations?q=1"
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=30) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n0")
        received = bytearray()
        _read_until(sock, received, b"done 0")
    head = bytes(received).split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 200 OK"
    names = [line.split(b":")[0] for line in head[1:]]
    assert names == [b"Server", b"Date", b"Content-Length", b"X-Backend-Path"]
    _stop(endpoint)


TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=20
)
VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        received = bytearray()
        while data := sock.recv(65536):
            received += data
    return bytes(received).partition(b"\r\n\r\n")[2]


def test_any_request_headers_reach_the_server_as_they_reach_it_directly(serve) -> None:
    """The class of header sets (hypothesis: names of any case, repeated names, any visible
    values, any order): what the server sees through the front equals what it sees directly."""
    endpoint = serve(options=("--serve-drain-delay", "0"))
    server_port = endpoint.run.wait_event("serve_front")["server_port"]
    endpoint.run.wait_event("serve_ready")

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(TOKEN.filter(lambda n: n.lower() not in SKIP), VALUE), max_size=12))
    def probe(headers: list[tuple[str, str]]) -> None:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
        raw = f"GET /headers HTTP/1.1\r\nHost: x\r\n{lines}Connection: close\r\n\r\n".encode()
        assert _exchange(endpoint.port, raw) == _exchange(server_port, raw)

    probe()
    _stop(endpoint)


SKIP = {"host", "connection", "content-length", "transfer-encoding", "expect", "upgrade", "keep-alive"}


def test_a_client_that_goes_away_is_passed_on(serve) -> None:
    """The client closes while the server works: the server sees its connection end (it says
    ``client gone``), and the access record says so."""
    endpoint = serve(options=("--serve-drain-delay", "0"))
    endpoint.run.wait_event("serve_ready")
    sock = socket.create_connection(("127.0.0.1", endpoint.port), timeout=30)
    sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n600")
    wait_line(endpoint.run, "started /invocations")
    sock.close()
    wait_line(endpoint.run, "client gone")
    err = _stop(endpoint)
    access = next(e for e in events(err) if e["event"] == "access" and e["path"] == "/invocations")
    assert (access["status"], access["outcome"]) == (None, "client_gone")


def test_keep_alive_carries_several_requests(serve) -> None:
    """One client connection, three requests in turn (the second pipelined with the first)."""
    endpoint = serve(options=("--serve-drain-delay", "0"))
    endpoint.run.wait_event("serve_ready")
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=30) as sock:
        one = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n0"
        sock.sendall(one + one)
        received = bytearray()
        while received.count(b"done 0") < 2:
            data = sock.recv(65536)
            assert data, bytes(received)
            received += data
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        _read_until(sock, received, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    _stop(endpoint)


JUNK = st.binary(min_size=1, max_size=300) | st.builds(
    lambda line, head: line + b"\r\n" + head + b"\r\n\r\n",
    st.sampled_from(
        [b"GET / HTTP/1.1", b"POST /invocations HTTP/1.1", b"GET /ping HTTP/9.9", b"\x00 / HTTP/1.1"]
    ),
    st.binary(max_size=200),
)


def test_malformed_requests_never_hurt_the_front(serve) -> None:
    """Any bytes at all (hypothesis: random bytes, request lines with junk headers, NULs): the
    front answers or closes that connection, and keeps serving /ping 200 on a fresh one."""
    endpoint = serve(options=("--serve-drain-delay", "0"))
    endpoint.run.wait_event("serve_ready")

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(JUNK)
    def probe(junk: bytes) -> None:
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=30) as sock:
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        assert request(endpoint.port, "GET", "/ping").status == 200

    probe()
    err = _stop(endpoint)
    assert "serve_front_error" not in [e["event"] for e in events(err)]
