"""smsupervise's own events: one JSON line each on stderr (structlog, rendered by orjson, bytes
end-to-end), or a short text line for people with ``--log-format text``.

Every event carries ``"logger": "smsupervise"``, which tells it apart from the child's lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, BinaryIO, Protocol

import orjson
import structlog

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class EventLog(Protocol):
    """What modules use to report events: ``log.info("child_spawned", pid=12)``."""

    def debug(self, event: str, **fields: Any) -> Any: ...
    def info(self, event: str, **fields: Any) -> Any: ...
    def warning(self, event: str, **fields: Any) -> Any: ...
    def error(self, event: str, **fields: Any) -> Any: ...


def rfc3339_ms(epoch: float) -> str:
    """``2026-11-22T15:00:00.123Z``: UTC, millisecond precision."""
    whole = int(epoch)
    millis = int((epoch - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def _stamp(static: Mapping[str, object]) -> Any:
    def processor(_logger: object, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        ordered: dict[str, Any] = {
            "ts": rfc3339_ms(time.time()),
            "logger": "smsupervise",
            "level": method,
            "event": event_dict.pop("event"),
        }
        ordered.update(static)
        ordered.update(event_dict)
        return ordered

    return processor


def _json(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> bytes:
    return orjson.dumps(event_dict, default=str)


def _text(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> bytes:
    head = f"{event_dict.pop('ts')} smsupervise {event_dict.pop('level')}: {event_dict.pop('event')}"
    event_dict.pop("logger", None)
    tail = " ".join(f"{key}={value}" for key, value in event_dict.items())
    return f"{head} {tail}".rstrip().encode("utf-8", "replace")


def make_event_log(
    fmt: str = "json", level: str = "info", static: Mapping[str, object] | None = None,
    stream: BinaryIO | None = None,
) -> EventLog:
    """A logger for our own events, written to ``stream`` (default: stderr) one line per event."""
    renderer = _text if fmt == "text" else _json
    logger: EventLog = structlog.wrap_logger(
        structlog.BytesLogger(stream if stream is not None else sys.stderr.buffer),
        processors=[_stamp(dict(static or {})), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
    )
    return logger
