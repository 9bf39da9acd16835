"""The control socket's wire format: one JSON object per line, versioned.

A client sends one ``Request`` line; the server answers with one ``Response`` line, or, for a
following operation (``logs -f``, ``exec``), with ``Response`` lines carrying ``item`` until one
with ``end``. Every line carries ``v``; a server refuses a version it does not speak, naming both.
Every argument of every operation is checked here, its type and its range (``ARGUMENTS``): a
request the handlers receive is well-formed, and any other is refused naming the field and the fix.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
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


MAX_LINES = 100_000  # ``logs --lines``: the ring holds fewer anyway
MAX_ARGV = 4096  # ``exec``: words
MAX_ARGV_BYTES = 128 * 1024  # ``exec``: all words together (one word's limit on Linux)
MAX_NAME = 64  # ``signal``, ``rank``: a name or a number


def _optional_bool(value: Any) -> str | None:
    return None if value is None or isinstance(value, bool) else "true or false"


def _stream(value: Any) -> str | None:
    return None if value in (None, "stdout", "stderr") else '"stdout", "stderr" or null'


def _lines(value: Any) -> str | None:
    if value is None or (type(value) is int and 0 <= value <= MAX_LINES):
        return None
    return f"a whole number from 0 to {MAX_LINES}"


def _name_or_number(value: Any) -> str | None:
    if type(value) is int or (isinstance(value, str) and 0 < len(value) <= MAX_NAME and "\0" not in value):
        return None
    return f"a name or a number (at most {MAX_NAME} characters)"


def _optional_name(value: Any) -> str | None:
    return None if value is None else _name_or_number(value)


def _argv(value: Any) -> str | None:
    expected = f"a list of 1 to {MAX_ARGV} strings without NUL, {MAX_ARGV_BYTES} bytes in all"
    if not isinstance(value, list) or not 0 < len(value) <= MAX_ARGV:
        return expected
    if not all(isinstance(word, str) and "\0" not in word for word in value):
        return expected
    if sum(len(word.encode("utf-8", "surrogatepass")) + 1 for word in value) > MAX_ARGV_BYTES:
        return expected
    return None


# Every argument each operation takes, with what it must be (None: fine, else what is expected).
ARGUMENTS: Mapping[str, Mapping[str, Callable[[Any], str | None]]] = {
    "status": {},
    "logs": {"follow": _optional_bool, "stream": _stream, "rank": _optional_name, "lines": _lines},
    "signal": {"signal": _name_or_number},
    "checkpoint": {},
    "release": {},
    "exec": {"argv": _argv},
}
REQUIRED = {"signal": ("signal",), "exec": ("argv",)}


def check_args(op: str, args: Mapping[str, Any]) -> None:
    """Raise ``ProtocolError`` naming the first argument of ``op`` that is unknown, missing or of
    the wrong type or range."""
    known = ARGUMENTS[op]
    for name, value in args.items():
        check = known.get(name)
        if check is None:
            names = ", ".join(sorted(known)) or "none"
            raise ProtocolError(f"'{op}' takes no argument {name!r}; its arguments: {names}")
        expected = check(value)
        if expected is not None:
            raise ProtocolError(
                f"'{op}' argument {name!r} must be {expected}, not {_shown(value)}: "
                "use the smsupervise-debug of the same smsupervise version"
            )
    for name in REQUIRED.get(op, ()):
        if name not in args:
            raise ProtocolError(f"'{op}' needs the argument {name!r}")


def _shown(value: Any) -> str:
    text = orjson.dumps(value).decode() if _encodable(value) else type(value).__name__
    return text if len(text) <= 80 else f"{type(value).__name__} of {len(text)} characters"


def _encodable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


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
        """One line. What JSON cannot hold (too deep, a number beyond 64 bits, a lone surrogate)
        never ends the connection: an item is sent as its text, a result as an error."""
        record: dict[str, Any] = {"v": VERSION, "ok": self.ok}
        for key in ("result", "error", "item"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        if self.end:
            record["end"] = True
        try:
            return orjson.dumps(record, default=str) + b"\n"
        except TypeError as error:  # orjson.JSONEncodeError
            if self.item is not None:
                text = str(self.item)[:65536].encode("utf-8", "replace").decode()
                shown = {"msg": text, "encode_error": str(error)}
                return orjson.dumps({"v": VERSION, "ok": self.ok, "item": shown}) + b"\n"
            failed = {"v": VERSION, "ok": False, "error": f"internal error: the answer is not JSON: {error}"}
            return orjson.dumps(failed) + b"\n"


def decode_request(line: bytes) -> Request:
    """Parse a request line; raises ``ProtocolError`` naming what is wrong."""
    record = _object(line)
    version = record.get("v")
    if type(version) is not int or version != VERSION:
        raise ProtocolError(
            f"protocol version {_shown(version)} is not spoken here (this supervisor speaks v{VERSION}): "
            "use the smsupervise-debug of the same smsupervise version"
        )
    op = record.get("op")
    if not isinstance(op, str) or op not in OPERATIONS:
        raise ProtocolError(f"unknown operation {_shown(op)}; known: {', '.join(sorted(OPERATIONS))}")
    args = record.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(f"'args' must be an object, not {type(args).__name__}")
    check_args(op, args)
    return Request(op, args)


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
