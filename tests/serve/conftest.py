"""The serve front's fixtures: a free port for the front, the test backend, and a tiny HTTP client
that says what happened (status, or refused, or cut) instead of raising."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest

from tests.conftest import Supervised

BACKEND = str(Path(__file__).with_name("backend.py"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Reply(NamedTuple):
    """One request's fate: ``status`` and body, or ``error`` ("refused", "cut: ...")."""

    status: int | None
    body: bytes
    error: str | None
    headers: dict[str, str]


def request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 60) -> Reply:
    """One request on a new connection (``Connection: close``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        try:
            conn.connect()
        except ConnectionRefusedError:
            return Reply(None, b"", "refused", {})
        try:
            conn.request(method, path, body=body, headers={"Connection": "close"})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            return Reply(None, b"", f"cut: {error!r}", {})
        return Reply(response.status, data, None, {k.lower(): v for k, v in response.getheaders()})
    finally:
        conn.close()


def wait_line(run: Supervised, text: str) -> dict[str, Any]:
    """Read smsupervise's stderr until the child's line containing ``text`` (the backend writes its
    news to stderr); the lines read are kept for ``run.wait``."""
    assert run.proc.stderr is not None
    while True:
        line = run.proc.stderr.readline()
        if not line:
            raise AssertionError(f"smsupervise exited before the line {text!r}: {run._err[-3000:]!r}")
        run._err += line
        with contextlib.suppress(orjson.JSONDecodeError):
            record = orjson.loads(line)
            if isinstance(record, dict) and text in str(record.get("msg", "")):
                return record


def wait_event_where(run: Supervised, event: str, **fields: object) -> dict[str, Any]:
    """Like ``wait_event``, for the event whose fields match."""
    while True:
        record = run.wait_event(event)
        if all(record.get(k) == v for k, v in fields.items()):
            return record


class Endpoint(NamedTuple):
    """A running smsupervise with the front on, and its port."""

    run: Supervised
    port: int


@pytest.fixture
def serve(start: Callable[..., Supervised]) -> Callable[..., Endpoint]:
    """``serve(*backend_args, options=(...), env={...})``: smsupervise serve with the front on and
    the test backend as the server; the front's port is a free one."""

    def launch(*backend: str, options: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Endpoint:
        port = free_port()
        environment = {
            **os.environ,
            "SMSUPERVISE_SERVE": " ".join([sys.executable, BACKEND, *backend]),
            "SAGEMAKER_BIND_TO_PORT": str(port),
            **(env or {}),
        }
        run = start(
            "--control-socket", "none", "--serve-front", "on", *options, "serve", env=environment, bufsize=0
        )  # unbuffered: lines read here are not lost to communicate()
        return Endpoint(run, port)

    return launch
