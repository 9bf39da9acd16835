"""Each host's output: read line by line, kept in ``DIR/logs/algo-K.jsonl``, searched for metrics
(``DIR/metrics.jsonl``) and shown to people.

A line that is a JSON object (smsupervise's records and events, a job's own JSON) is kept as it is
with ``host`` added; any other line becomes ``{"ts", "host", "stream", "msg"}``. One thread per
stream reads until EOF; one more waits for the host's launcher and reports its exit on the runner's
queue.
"""

from __future__ import annotations

import datetime
import os
import queue
import threading
import time
from typing import IO, Any

import orjson

from smsupervise.local.console import Console
from smsupervise.local.launch import HostProcess
from smsupervise.local.metrics import Extractor, message


class HostLog:
    """``logs/algo-K.jsonl`` and the shared ``metrics.jsonl`` (writers serialised by locks)."""

    _metrics_lock = threading.Lock()

    def __init__(self, path: str, work: str) -> None:
        self.path = path
        self.metrics_path = os.path.join(work, "metrics.jsonl")
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        with self._lock, open(self.path, "ab") as handle:
            handle.write(orjson.dumps(record) + b"\n")

    def metric(self, sample: dict[str, Any]) -> None:
        """Append one metric sample."""
        with self._metrics_lock, open(self.metrics_path, "ab") as handle:
            handle.write(orjson.dumps(sample) + b"\n")


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds")


def _record(line: bytes) -> dict[str, Any] | None:
    if not line.startswith(b"{"):
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _read(  # noqa: PLR0917 (a thread target: positional by nature)
    stream: IO[bytes], name: str, host: str, log: HostLog, extractor: Extractor, console: Console
) -> None:
    with stream:
        for line in stream:
            now = time.time()
            record = _record(line)
            text = message(line)
            if text is not None:
                for sample in extractor.scan(text, host, name, now):
                    log.metric(
                        {
                            "MetricName": sample.name,
                            "Value": sample.value,
                            "Timestamp": _iso(now),
                            "Host": host,
                            "Stream": name,
                        }
                    )
            shown = text if text is not None else line.decode("utf-8", "replace").rstrip("\r\n")
            kept = dict(record) if record is not None else {"ts": _iso(now), "stream": name, "msg": shown}
            kept.setdefault("host", host)
            log.write(kept)
            console.record(host, name, record, shown)


def relay(
    host: HostProcess, log: HostLog, extractor: Extractor, console: Console, events: queue.SimpleQueue[Any]
) -> list[threading.Thread]:
    """Start the reader threads and the exit waiter of one host; returns them (to join)."""
    name, index, process = host.plan.host.name, host.plan.host.index, host.process
    assert process.stdout is not None
    assert process.stderr is not None
    threads = [
        threading.Thread(
            target=_read, args=(process.stdout, "stdout", name, log, extractor, console), daemon=True
        ),
        threading.Thread(
            target=_read, args=(process.stderr, "stderr", name, log, extractor, console), daemon=True
        ),
        threading.Thread(target=lambda: events.put(("exit", index, process.wait())), daemon=True),
    ]
    for thread in threads:
        thread.start()
    return threads
