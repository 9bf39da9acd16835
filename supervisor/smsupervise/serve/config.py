"""Before the loop: the front's port (``SAGEMAKER_BIND_TO_PORT``, 8080), the server's port (named,
or a free one of ``SAGEMAKER_SAFE_PORT_RANGE``, or one the kernel picks), the health check with its
body read, and the listening socket, bound now so a taken port fails the start with its name."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping
from typing import NamedTuple

from smsupervise.errors import UsageError
from smsupervise.parsers import HealthCheck
from smsupervise.settings import Settings

PORT_VARIABLE = "SAGEMAKER_BIND_TO_PORT"
RANGE_VARIABLE = "SAGEMAKER_SAFE_PORT_RANGE"
DEFAULT_PORT = 8080
BACKEND_HOST = "127.0.0.1"
PING = "/ping"


class Probe(NamedTuple):
    """The health check as it is sent: method, path, body (empty: none) and content type."""

    method: str
    path: str
    body: bytes
    content_type: str | None

    def request(self, port: int) -> bytes:
        """The probe's whole request (``Connection: close``: one probe, one connection)."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {BACKEND_HOST}:{port}", "Connection: close"]
        if self.body or self.method not in ("GET", "HEAD"):
            lines.append(f"Content-Length: {len(self.body)}")
        if self.content_type:
            lines.append(f"Content-Type: {self.content_type}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


class FrontConfig(NamedTuple):
    """Everything the front needs, resolved."""

    port: int  # where SageMaker calls (ours)
    backend_port: int  # where the server listens (told in SAGEMAKER_BIND_TO_PORT)
    probe: Probe
    paths: Mapping[bytes, bytes]  # request path -> path sent to the server
    drain_delay: float
    drain_timeout: float
    ping_summary: float


def _port(env: Mapping[str, str]) -> int:
    text = env.get(PORT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_PORT
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"{PORT_VARIABLE}={text!r} is not a TCP port; unset it for 8080 or use 1 to 65535")
    return int(text)


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 - the server will bind all addresses too
        except OSError:
            return False
    return True


def backend_port(named: int | None, env: Mapping[str, str], front: int) -> int:
    """The server's port: the one named, else the first free one of SAGEMAKER_SAFE_PORT_RANGE
    ("XXXX-YYYY", inclusive) other than ours, else a free one the kernel picks."""
    if named is not None:
        if named == front:
            raise UsageError(f"--serve-port {named} is the front's own port ({PORT_VARIABLE}); name another")
        return named
    text = env.get(RANGE_VARIABLE, "").strip()
    if text:
        low, sep, high = text.partition("-")
        if not (sep and low.strip().isdigit() and high.strip().isdigit()):
            raise UsageError(
                f"{RANGE_VARIABLE}={text!r} is not a port range; SageMaker writes e.g. 8081-8090"
            )
        for port in range(int(low), int(high) + 1):
            if port != front and 1 <= port <= 65535 and _free(port):
                return port
        raise UsageError(
            f"{RANGE_VARIABLE}={text!r}: no free port in it for your server; name one with --serve-port"
        )
    with socket.socket() as probe:
        probe.bind((BACKEND_HOST, 0))
        return int(probe.getsockname()[1])


def _probe(check: HealthCheck, paths: Mapping[bytes, bytes]) -> Probe:
    path = check.path
    if check == HealthCheck("GET", PING):  # the default follows the mapping of /ping (vLLM: /health)
        path = paths.get(PING.encode(), PING.encode()).decode()
    body = b""
    if check.body_file is not None:
        try:
            with open(check.body_file, "rb") as file:
                body = file.read()
        except OSError as error:
            raise UsageError(
                f"--serve-health: the probe body {check.body_file} cannot be read ({error.strerror}); "
                "give a readable file as @FILE"
            ) from None
    return Probe(check.method, path, body, check.content_type)


def resolve(settings: Settings, env: Mapping[str, str]) -> FrontConfig:
    """The front's configuration from the settings and the environment (raises ``UsageError``)."""
    port = _port(env)
    paths = {origin.encode(): target.encode() for origin, target in settings.serve_map}
    return FrontConfig(
        port,
        backend_port(settings.serve_port, env, port),
        _probe(settings.serve_health, paths),
        paths,
        settings.serve_drain_delay,
        settings.serve_drain_timeout,
        settings.serve_ping_summary,
    )


def listen(port: int) -> socket.socket:
    """The front's listening socket on every address, non-blocking and close-on-exec (the job never
    gets it); a port already taken fails the start with a fix."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("0.0.0.0", port))  # noqa: S104 - SageMaker calls from outside the container
        sock.listen(1024)
    except OSError as error:
        sock.close()
        why = (
            "is taken by another process" if error.errno == errno.EADDRINUSE else f"failed: {error.strerror}"
        )
        raise UsageError(
            f"--serve-front: listening on port {port} ({PORT_VARIABLE}) {why}; does your server still "
            f"bind {port} itself? It must listen where {PORT_VARIABLE} says (smsupervise sets it)"
        ) from None
    sock.setblocking(False)
    os.set_inheritable(sock.fileno(), False)
    return sock
