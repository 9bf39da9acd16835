"""What people (or programs, with ``--json``) see while a job runs.

Readable mode: each host's records as ``algo-1 | message`` (the level when there is one) on
stdout, the runner's own notes as ``smsupervise-local: ...`` on stderr, and on a terminal a live
status line (secondary status, elapsed time, bytes staged and uploaded) redrawn under them.
``--json``: every record as one JSON object with ``host`` and ``stream`` added, and the runner's
events as JSON on stderr. ``--quiet``: only the final summary (and errors).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

import orjson


def _size(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000  # type: ignore[assignment]
    return ""


class Console:
    """Thread-safe output for the runner (reader threads and the main thread share it)."""

    def __init__(
        self, quiet: bool, as_json: bool, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.quiet, self.as_json = quiet, as_json
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.live = self.err.isatty() and not quiet and not as_json
        self._lock = threading.Lock()
        self._began = time.monotonic()
        self.status, self.staged, self.uploaded = "Starting", 0, 0

    def _status_line(self) -> str:
        elapsed = int(time.monotonic() - self._began)
        return (
            f"[{self.status} {elapsed // 60:02d}:{elapsed % 60:02d} "
            f"staged {_size(self.staged)} uploaded {_size(self.uploaded)}]"
        )

    def _write(self, stream: TextIO, text: str) -> None:
        if self.live:
            self.err.write("\r\x1b[K")
        stream.write(text)
        stream.flush()
        if self.live:
            self.err.write(self._status_line())
            self.err.flush()

    def record(self, host: str, stream: str, record: dict[str, Any] | None, text: str) -> None:
        """One output line of a host (``record``: the line's JSON object, if it is one)."""
        if self.quiet:
            return
        if self.as_json:
            body = dict(record) if record is not None else {"stream": stream, "msg": text}
            body.setdefault("host", host)
            body.setdefault("stream", stream)
            line = orjson.dumps(body).decode() + "\n"
        elif record is not None and record.get("logger") == "smsupervise":
            fields = " ".join(
                f"{k}={v}" for k, v in record.items() if k not in ("ts", "logger", "level", "event")
            )
            line = f"{host} | [smsupervise] {record.get('event')} {fields}\n"
        else:
            level = f"{record['level']} " if record is not None and "level" in record else ""
            line = f"{host} | {level}{text}\n"
        with self._lock:
            self._write(self.out, line)

    def event(self, name: str, text: str, **fields: Any) -> None:
        """The runner's own note: readable text, or a JSON event with ``fields``."""
        if self.quiet and name not in ("job_finished", "invalid_request", "runner_error", "work_dir_busy"):
            return
        if self.as_json:
            line = orjson.dumps({"logger": "smsupervise-local", "event": name, **fields}).decode() + "\n"
        else:
            line = f"smsupervise-local: {text}\n"
        with self._lock:
            self._write(self.err, line)

    def set_status(self, status: str) -> None:
        """A new secondary status."""
        self.status = status
        self.event("status", f"{status}", status=status)

    def close(self) -> None:
        """End the live status line."""
        if self.live:
            with self._lock:
                self.err.write("\r\x1b[K")
                self.err.flush()
