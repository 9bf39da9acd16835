"""MetricDefinitions applied to the job's output, as the service does, with our documented choices.

Each definition's regex (Python ``re``) is searched in every line of every host's stdout and stderr;
the line is the message text: a smsupervise JSON record's ``msg``, any other line as it is (raw and
text formats, a ContainerEntrypoint, a JSON line emitted at the root); a line longer than the
runner's part size is searched part by part. The first capture group is parsed as a float; a match
without a group, or a group that is not a number, is skipped. Choices where the service is
undocumented: matching is per line; the first match in a line counts; the final value
(FinalMetricDataList) is the last one seen, on any host; smsupervise's own events
(``"logger": "smsupervise"``) are not searched.

A regex can backtrack for longer than the universe lasts (``(a+)+$`` on a long line of ``a``), and
CPython's ``re`` holds the GIL while it searches: in the runner's process it would hold every thread,
the one that handles Ctrl-C, SIGTERM and MaxRuntimeInSeconds included. So the searching happens in a
matcher process (``python -m smsupervise.local.metrics``), each line within ``budget`` seconds (a
timer there interrupts the search: ``re`` checks signals as it goes); a definition that runs out of
time is dropped for the rest of the job and reported once (``on_slow``). A matcher that dies or does
not answer at all is killed, and metrics end for the job (``on_broken``).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import orjson

from smsupervise.local.job import Metric

FINAL_LIMIT = 40
SEARCH_BUDGET = 1.0  # seconds per line for all definitions (ours: the service does not say)
ANSWER_GRACE = 30.0  # beyond the budgets: a matcher this late is stuck (or the machine is)
_HEADER = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Sample:
    """One metric value read from one line."""

    name: str
    value: float
    timestamp: float
    host: str
    stream: str


def message(line: bytes) -> str | None:
    """The text a metric regex sees for one output line; None for smsupervise's own events.

    A line's end (``\\n``, or ``\\r\\n``) is not part of it; a part of a longer line has none.
    """
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
    if line.endswith(b"\n"):
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    return line.decode("utf-8", "replace")


def _ignore(*_args: Any) -> None:
    return None


class Extractor:
    """Finds metric values in lines; thread-safe (one reader thread per host stream calls it).

    The matcher process starts with the first line; ``close()`` ends it.
    """

    def __init__(
        self,
        definitions: tuple[Metric, ...],
        budget: float = SEARCH_BUDGET,
        on_slow: Callable[[Metric, float], None] = _ignore,
        on_broken: Callable[[str], None] = _ignore,
    ) -> None:
        self._definitions = definitions
        self._budget = budget
        self._on_slow, self._on_broken = on_slow, on_broken
        self._final: dict[str, Sample] = {}
        self._lock = threading.Lock()
        self._matcher: subprocess.Popen[bytes] | None = None
        self._pending = b""
        self._broken = not definitions
        self._active = len(definitions)
        self.slow: list[Metric] = []

    def _start(self) -> subprocess.Popen[bytes]:
        matcher = subprocess.Popen(
            [sys.executable, "-m", "smsupervise.local.metrics", repr(self._budget)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C is the runner's to handle, not the matcher's
        )
        assert matcher.stdin is not None
        _send(matcher.stdin, orjson.dumps([d.regex for d in self._definitions]))
        return matcher

    def _answer(self, matcher: subprocess.Popen[bytes]) -> dict[str, Any]:
        """The matcher's answer to the line just sent, or OSError when it is dead or stuck."""
        assert matcher.stdout is not None
        fd = matcher.stdout.fileno()
        deadline = time.monotonic() + self._budget * (self._active + 1) + ANSWER_GRACE
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise OSError(f"the metric matcher gave no answer in {ANSWER_GRACE:g} s beyond its budget")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise OSError(f"the metric matcher ended (exit status {matcher.wait()})")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    def _ask(self, text: str) -> dict[str, Any] | None:
        if self._broken:
            return None
        try:
            if self._matcher is None:
                self._matcher = self._start()
            assert self._matcher.stdin is not None
            _send(self._matcher.stdin, text.encode("utf-8", "surrogatepass"))
            return self._answer(self._matcher)
        except (OSError, ValueError) as error:
            self._broken = True
            self._stop_matcher(kill=True)
            self._on_broken(str(error))
            return None

    def scan(self, text: str, host: str, stream: str, timestamp: float) -> list[Sample]:
        """Every metric value in one line's text (at most one per definition)."""
        with self._lock:
            answer = self._ask(text)
            if answer is None:
                return []
            for index in answer["slow"]:
                metric = self._definitions[index]
                self.slow.append(metric)
                self._active -= 1
                self._on_slow(metric, self._budget)
            found = []
            for index, group in answer["found"]:
                try:
                    value = float(group)
                except ValueError:
                    continue
                found.append(Sample(self._definitions[index].name, value, timestamp, host, stream))
            for sample in found:
                self._final[sample.name] = sample
            return found

    def final(self) -> list[Sample]:
        """The last value of each metric, in definition order (at most 40)."""
        with self._lock:
            order = [d.name for d in self._definitions]
            return [self._final[name] for name in order if name in self._final][:FINAL_LIMIT]

    def _stop_matcher(self, kill: bool) -> None:
        matcher, self._matcher = self._matcher, None
        if matcher is None:
            return
        if kill:
            matcher.kill()
        assert matcher.stdin is not None
        with contextlib.suppress(OSError):
            matcher.stdin.close()  # EOF: it ends (within its budget, if it was searching)
        try:
            matcher.wait(timeout=self._budget * (self._active + 1) + ANSWER_GRACE)
        except subprocess.TimeoutExpired:
            matcher.kill()
            matcher.wait()
        assert matcher.stdout is not None
        matcher.stdout.close()

    def close(self) -> None:
        """End the matcher process (the reader threads are done with it)."""
        with self._lock:
            self._stop_matcher(kill=False)


def _send(stream: IO[bytes], data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    size: int = _HEADER.unpack(header)[0]
    data = stream.read(size)
    return data if len(data) == size else None


class _TooSlow(Exception):
    """The search of one definition ran out of time."""


@dataclass
class _Timer:
    armed: bool = False

    def fire(self, _signum: int, _frame: object) -> None:
        if self.armed:
            self.armed = False
            raise _TooSlow


def _search(
    patterns: list[re.Pattern[str] | None], text: str, budget: float, timer: _Timer
) -> dict[str, Any]:
    """One line against every definition still searched; a definition out of time is dropped."""
    found: list[tuple[int, str]] = []
    slow: list[int] = []
    start = 0
    while start < len(patterns):
        index = start
        try:
            timer.armed = True
            signal.setitimer(signal.ITIMER_REAL, budget)
            for index in range(start, len(patterns)):
                pattern = patterns[index]
                if pattern is None or pattern.groups < 1:
                    continue
                match = pattern.search(text)
                if match is not None and match.group(1) is not None:
                    found.append((index, match.group(1)))
            index = len(patterns)
        except _TooSlow:
            if index < len(patterns):  # (not a timer that fired as the last search returned)
                patterns[index] = None
                slow.append(index)
        finally:
            timer.armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        start = index + 1
    return {"found": found, "slow": slow}


def serve(budget: float) -> None:
    """The matcher process: regexes (a JSON list) in the first frame, then one line per frame; one
    JSON answer line per line: ``{"found": [[index, group 1], ...], "slow": [index, ...]}``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    timer = _Timer()
    signal.signal(signal.SIGALRM, timer.fire)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    first = _receive(source)
    if first is None:
        return
    patterns: list[re.Pattern[str] | None] = [re.compile(r) for r in orjson.loads(first)]
    while (frame := _receive(source)) is not None:
        answer = _search(patterns, frame.decode("utf-8", "surrogatepass"), budget, timer)
        sink.write(orjson.dumps(answer) + b"\n")
        sink.flush()


if __name__ == "__main__":
    serve(float(sys.argv[1]))
