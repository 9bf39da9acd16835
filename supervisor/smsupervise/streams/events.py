"""smsupervise's own events: one JSON line each on stderr, bytes end-to-end (orjson), or a line for
people with ``--log-format text`` (structlog's ConsoleRenderer).

Every event carries ``"logger": "smsupervise"``, which tells it apart from the child's lines.

The JSON path does not go through structlog: importing it alone would break the start-up target
(1.2x the bare Python floor, benchmarks/pid1.py; the README's "How it is built" has the figures).
An event is a dict rendered by orjson in one call and written with one ``write``; structlog is
imported only for the text renderer, where people are watching.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
DIRECT_TIMEOUT = 2.0  # the longest one event written outside the loop waits for a stalled reader
Renderer = Callable[[dict[str, Any]], bytes]


def rfc3339_ms(epoch: float) -> str:
    """``2026-11-22T15:00:00.123Z``: UTC, millisecond precision."""
    whole = int(epoch)
    millis = int((epoch - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def render_json(record: dict[str, Any]) -> bytes:
    """One event as one JSON line (no newline)."""
    return orjson.dumps(record, default=str)


def _text_renderer() -> Renderer:
    import structlog  # noqa: PLC0415  (only for people: start-up time does not matter here)

    console = structlog.dev.ConsoleRenderer(colors=False, pad_event_to=22, timestamp_key="ts")

    def render(record: dict[str, Any]) -> bytes:
        record = dict(record)
        record.pop("logger", None)
        text: str = console(None, record.get("level", "info"), record)
        return text.encode("utf-8", "replace")

    return render


def write_all(fd: int, data: bytes, timeout: float | None = None) -> int:
    """Write every byte (a pipe may take less than asked), for at most ``timeout`` seconds of
    waiting for the reader; returns how many bytes could not be written (0: all of them)."""
    import select  # noqa: PLC0415

    view = memoryview(data)
    deadline = None if timeout is None else time.monotonic() + timeout
    while view:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        try:
            if not select.select([], [fd], [], left)[1]:
                break
            view = view[os.write(fd, view) :]
        except InterruptedError:
            continue
        except BlockingIOError:
            continue
        except (OSError, ValueError):  # the reader is gone (EPIPE) or the fd is unusable
            break
    return len(view)


class EventLog:
    """Writes our events, one line each, to ``fd`` (default: stderr)."""

    def __init__(
        self, fmt: str = "json", level: str = "info", static: Mapping[str, object] | None = None, fd: int = 2
    ) -> None:
        self._threshold = LEVELS[level]
        self._render = _text_renderer() if fmt == "text" else render_json
        self._static = dict(static or {})
        self._fd = fd
        self._sink: Callable[[bytes], None] = self._write_direct
        self.direct_timeout = DIRECT_TIMEOUT
        self.dropped = 0  # events that could not be written outside the loop

    def _write_direct(self, line: bytes) -> None:
        """Outside the loop (before it starts, after it ends): a stalled reader gets a bounded wait,
        then the event is dropped and counted, so a stuck log pipe cannot hang start-up or exit."""
        if write_all(self._fd, line, self.direct_timeout):
            self.dropped += 1
            self.direct_timeout = 0.0  # the reader is stalled: do not wait for it again

    def redirect(self, sink: Callable[[bytes], None] | None) -> None:
        """Send rendered lines to ``sink`` (our stderr writer while the loop runs); None: direct."""
        self._sink = sink if sink is not None else self._write_direct

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if LEVELS[level] < self._threshold:
            return
        record: dict[str, Any] = {
            "ts": rfc3339_ms(time.time()),
            "logger": "smsupervise",
            "level": level,
            "event": event,
        }
        record.update(self._static)
        record.update(fields)
        self._sink(self._render(record) + b"\n")

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)
