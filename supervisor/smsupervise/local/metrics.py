"""MetricDefinitions applied to the job's output, as the service does, with our documented choices.

Each definition's regex (Python ``re``) is searched in every line of every host's stdout and stderr;
the line is the message text: a smsupervise JSON record's ``msg``, any other line as it is (raw and
text formats, a ContainerEntrypoint, a JSON line emitted at the root). The first capture group is
parsed as a float; a match without a group, or a group that is not a number, is skipped. Choices
where the service is undocumented: matching is per line; the first match in a line counts; the
final value (FinalMetricDataList) is the last one seen, on any host; smsupervise's own events
(``"logger": "smsupervise"``) are not searched.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import orjson

from smsupervise.local.job import Metric

FINAL_LIMIT = 40


@dataclass(frozen=True, slots=True)
class Sample:
    """One metric value read from one line."""

    name: str
    value: float
    timestamp: float
    host: str
    stream: str


def message(line: bytes) -> str | None:
    """The text a metric regex sees for one output line; None for smsupervise's own events."""
    if line.startswith(b"{"):
        try:
            record: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            if record.get("logger") == "smsupervise":
                return None
            if isinstance(record.get("msg"), str) and "seq" in record:
                return str(record["msg"])
    return line.decode("utf-8", "replace").rstrip("\r\n")


class Extractor:
    """Finds metric values in lines; thread-safe (one reader thread per host stream calls it)."""

    def __init__(self, definitions: tuple[Metric, ...]) -> None:
        self._patterns = [(d.name, re.compile(d.regex)) for d in definitions]
        self._final: dict[str, Sample] = {}
        self._lock = threading.Lock()

    def scan(self, text: str, host: str, stream: str, timestamp: float) -> list[Sample]:
        """Every metric value in one line's text (at most one per definition)."""
        found = []
        for name, pattern in self._patterns:
            match = pattern.search(text)
            if match is None or pattern.groups < 1 or match.group(1) is None:
                continue
            try:
                value = float(match.group(1))
            except ValueError:
                continue
            found.append(Sample(name, value, timestamp, host, stream))
        if found:
            with self._lock:
                for sample in found:
                    self._final[sample.name] = sample
        return found

    def final(self) -> list[Sample]:
        """The last value of each metric, in definition order (at most 40)."""
        with self._lock:
            order = [name for name, _ in self._patterns]
            return [self._final[name] for name in order if name in self._final][:FINAL_LIMIT]
