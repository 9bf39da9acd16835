"""Each host's output: read line by line, kept in ``DIR/logs/algo-K.jsonl``, searched for metrics
(``DIR/metrics.jsonl``) and shown to people.

A line that is a JSON object (smsupervise's records and events, a job's own JSON) is kept as it is
with ``host`` added; any other line becomes ``{"ts", "host", "stream", "msg"}``. One thread per
stream reads until EOF; one more waits for the host's launcher and reports its exit on the runner's
queue.

Reads are bounded: a line longer than ``PART`` bytes (a tqdm bar that never ends its line, 600 MB
without a newline) is read, kept, shown and searched ``PART`` bytes at a time, each part marked as
smsupervise marks its own (``"partial": {"id", "n", "last"}``: ``id`` numbers the line in its
stream, ``n`` counts from 1, the part that ends it has ``last: true``; joining the ``msg`` of parts
1..last gives the line back). ``PART`` is above smsupervise's largest ``--max-line-bytes``, so its
records always arrive whole. A line that cannot be kept (the disk is full) is still read, so the
job is never held by its pipe; the first such error of a stream is reported (``log_not_kept``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import orjson

from smsupervise.local.console import Console
from smsupervise.local.launch import HostProcess
from smsupervise.local.metrics import Extractor, message

PART = 1 << 20  # bytes; > smsupervise's largest --max-line-bytes (1048550) and its newline


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


def _parts(stream: IO[bytes]) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
    """Lines of at most ``PART`` bytes, each with its ``partial`` mark (None for a whole line)."""
    number, n = 0, 0  # the line's number in the stream; its parts so far (0: not a long line)
    while True:
        chunk = stream.readline(PART)
        ended = chunk.endswith(b"\n") or len(chunk) < PART  # a newline, or EOF
        if not chunk:
            if n:  # EOF right after a full part: the line's last part is empty
                yield b"", {"id": number, "n": n + 1, "last": True}
            return
        if n == 0:
            number += 1
            if ended:
                yield chunk, None
                continue
        n += 1
        yield chunk, {"id": number, "n": n, "last": ended}
        if ended:
            n = 0


def _part_text(part: bytes) -> str:
    """A part's text: raw (a part of a JSON line is no JSON), without the line end of the last."""
    if part.endswith(b"\n"):
        part = part[:-2] if part.endswith(b"\r\n") else part[:-1]
    return part.decode("utf-8", "replace")


def _handle(  # noqa: PLR0917 (one line of a reader thread)
    line: bytes,
    partial: dict[str, Any] | None,
    name: str,
    host: str,
    log: HostLog,
    extractor: Extractor,
    console: Console,
) -> None:
    now = time.time()
    record = _record(line) if partial is None else None
    text = message(line) if partial is None else _part_text(line)
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
    kept: dict[str, Any] = (
        dict(record) if record is not None else {"ts": _iso(now), "stream": name, "msg": shown}
    )
    if partial is not None:
        kept["partial"] = partial
    kept.setdefault("host", host)
    log.write(kept)
    console.record(host, name, record, shown)


def _read(  # noqa: PLR0917 (a thread target: positional by nature)
    stream: IO[bytes], name: str, host: str, log: HostLog, extractor: Extractor, console: Console
) -> None:
    reported = False
    with stream:
        for line, partial in _parts(stream):
            try:
                _handle(line, partial, name, host, log, extractor, console)
            except Exception as error:  # keep draining: a job must never block on its pipe
                if not reported:
                    reported = True
                    with contextlib.suppress(Exception):
                        console.event(
                            "log_not_kept",
                            f"{host} {name}: a line could not be kept ({error}); still reading the rest",
                            host=host,
                            stream=name,
                            path=log.path,
                            error=str(error),
                        )


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
