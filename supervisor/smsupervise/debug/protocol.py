"""The control socket's wire format: one JSON object per line, versioned.

A client sends one ``Request`` line; the server answers with one ``Response`` line, or, for a
following operation (``logs -f``, ``exec``), with ``Response`` lines carrying ``item`` until one
with ``end``. Every line carries ``v``; a server refuses a version it does not speak, naming both.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

VERSION = 1
MAX_LINE = 1 << 20  # no request is longer; a longer line is refused, not buffered


class Access(enum.Enum):
    """What an operation needs from the peer: to read the supervisor's state, or to act on the job."""

    READ = "read"
    ACT = "act"


# Every operation the server knows, and what it needs. Unknown names are refused with this list.
OPERATIONS: Mapping[str, Access] = {
    "status": Access.READ,
    "logs": Access.READ,
    "signal": Access.ACT,
    "checkpoint": Access.ACT,
    "release": Access.ACT,
    "exec": Access.ACT,
}


class ProtocolError(Exception):
    """A line that is not a request this version understands; the message says what to send."""


class Request(NamedTuple):
    """One operation with its arguments."""

    op: str
    args: Mapping[str, Any]

    def encode(self) -> bytes:
        return orjson.dumps({"v": VERSION, "op": self.op, "args": dict(self.args)}) + b"\n"


class Response(NamedTuple):
    """An answer (``result``), one item of a stream (``item``), a stream's ``end``, or an ``error``."""

    ok: bool
    result: Any = None
    error: str | None = None
    item: Any = None
    end: bool = False

    def encode(self) -> bytes:
        record: dict[str, Any] = {"v": VERSION, "ok": self.ok}
        for key in ("result", "error", "item"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        if self.end:
            record["end"] = True
        return orjson.dumps(record, default=str) + b"\n"


def decode_request(line: bytes) -> Request:
    """Parse a request line; raises ``ProtocolError`` naming what is wrong."""
    record = _object(line)
    version = record.get("v")
    if version != VERSION:
        raise ProtocolError(
            f"protocol version {version!r} is not spoken here (this supervisor speaks v{VERSION}): "
            "use the smsupervise-debug of the same smsupervise version"
        )
    op = record.get("op")
    if op not in OPERATIONS:
        raise ProtocolError(f"unknown operation {op!r}; known: {', '.join(sorted(OPERATIONS))}")
    args = record.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(f"'args' must be an object, not {type(args).__name__}")
    return Request(str(op), args)


def decode_response(line: bytes) -> Response:
    """Parse a response line; raises ``ProtocolError`` on a line that is not one."""
    record = _object(line)
    if record.get("v") != VERSION:
        raise ProtocolError(
            f"the supervisor answered with protocol version {record.get('v')!r}, this client speaks "
            f"v{VERSION}: use the smsupervise-debug of the same smsupervise version"
        )
    return Response(
        ok=bool(record.get("ok")),
        result=record.get("result"),
        error=record.get("error"),
        item=record.get("item"),
        end=bool(record.get("end")),
    )


def _object(line: bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise ProtocolError(f"not a JSON line: {error}") from None
    if not isinstance(record, dict):
        raise ProtocolError(f"a line must be a JSON object, not {type(record).__name__}")
    return record
