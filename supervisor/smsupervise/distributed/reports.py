"""What the mesh hears and what it says about what it refuses: the typed report (every field
checked for its type, range and length on decode; anything else refused, never acted on), and
refusals logged in bounded amounts (the first few per interval in full, what they quote cut short,
the rest counted)."""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable, Iterator
from typing import Any, Literal, NamedTuple

import orjson

from smsupervise.streams.events import EventLog

REFUSALS_SHOWN = 5  # mesh_refused events in full per interval; the rest are counted
REFUSAL_INTERVAL = 60.0
QUOTE = 64  # characters of anything a stranger sent that a refusal quotes
HEADLINE_LIMIT = 2048
TAIL_LIMIT = 8192
NAME_LIMIT = 255

Kind = Literal["failed", "done"]


class Report(NamedTuple):
    """How a host's job ended, as told to the others."""

    kind: Kind
    host: str
    exit_code: int
    headline: str
    at: float  # epoch seconds: when the first rank failed (or the job ended)
    rank: int | None = None
    local_rank: int | None = None
    tail: str = ""  # the failing rank's last stderr lines

    def encode(self) -> bytes:
        return orjson.dumps(self._asdict()) + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Report | None:
        """A report from one line; None for anything malformed (``check`` says why)."""
        checked = check(line)
        return checked if isinstance(checked, Report) else None


def _is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _problems(data: dict[str, Any]) -> Iterator[str]:
    """What is wrong with a decoded report's fields: types, ranges, lengths, no others."""
    unknown = set(data) - set(Report._fields)
    if unknown:
        yield f"unknown fields {quote(sorted(unknown))}"
    for name in ("kind", "host", "exit_code", "headline", "at"):
        if name not in data:
            yield f"{name} is missing"
    strings = {"kind": NAME_LIMIT, "host": NAME_LIMIT, "headline": HEADLINE_LIMIT, "tail": TAIL_LIMIT}
    for name, limit in strings.items():
        value = data.get(name, "")
        if not isinstance(value, str) or len(value) > limit:
            yield f"{name} must be a string of at most {limit} characters, not {quote(value)}"
    if data.get("kind") not in ("failed", "done"):
        yield f"kind must be 'failed' or 'done', not {quote(data.get('kind'))}"
    if not _is_int(data.get("exit_code"), 0, 255):
        yield f"exit_code must be an integer 0-255, not {quote(data.get('exit_code'))}"
    at = data.get("at")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        yield f"at must be a finite number of seconds, not {quote(at)}"
    for name in ("rank", "local_rank"):
        value = data.get(name)
        if value is not None and not _is_int(value, 0, 2**31 - 1):
            yield f"{name} must be a rank (an integer >= 0) or null, not {quote(value)}"


def check(line: bytes) -> Report | str:
    """A report from one line, or why it is refused (bad JSON, not an object, a wrong field)."""
    try:
        data: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(data, dict):
        return f"not a JSON object: {quote(data)}"
    problem = next(_problems(data), None)
    if problem is not None:
        return problem
    return Report(**{**data, "at": float(data["at"])})


def quote(value: object) -> str:
    """A stranger's value for a log line: its repr, cut to ``QUOTE`` characters."""
    text = repr(value)
    return text if len(text) <= QUOTE else f"{text[:QUOTE]}... ({len(text)} characters)"


Say = Callable[..., None]  # one event of a fixed name, with its fields


class Refusals:
    """Refusals logged in bounded amounts: the first ``REFUSALS_SHOWN`` in each interval in full
    (``show``), the rest counted per address and summed up at the interval's end (``summarize``).
    Made by ``stranger_refusals`` and ``report_refusals``, which name the events."""

    def __init__(self, show: Say, summarize: Say, interval: float = REFUSAL_INTERVAL) -> None:
        self.show = show
        self.summarize = summarize
        self.interval = interval
        self.shown = 0
        self.counted: collections.Counter[str] = collections.Counter()
        self.timer: asyncio.TimerHandle | None = None

    def note(self, address: str, why: str) -> None:
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.interval, self.flush)
        if self.shown < REFUSALS_SHOWN:
            self.shown += 1
            self.show(address=address, why=why)
        elif address in self.counted or len(self.counted) < 1000:
            self.counted[address] += 1
        else:
            self.counted["other addresses"] += 1

    def flush(self) -> None:
        """The interval is over: the summary of what was not shown, and a fresh start."""
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None
        if self.counted:
            self.summarize(
                refused=sum(self.counted.values()),
                interval_s=self.interval,
                addresses=dict(self.counted.most_common(5)),
                other_addresses=max(0, len(self.counted) - 5),
                impact="none: refused connections and lines are never acted on",
            )
        self.shown = 0
        self.counted.clear()


def stranger_refusals(log: EventLog, interval: float = REFUSAL_INTERVAL) -> Refusals:
    """Connections refused before they proved the job's key (``mesh_refused``)."""
    return Refusals(
        lambda **fields: log.warning("mesh_refused", **fields),
        lambda **fields: log.warning("mesh_refused_summary", **fields),
        interval,
    )


def report_refusals(log: EventLog, interval: float = REFUSAL_INTERVAL) -> Refusals:
    """Malformed reports from a peer that has the key (``mesh_report_refused``)."""
    return Refusals(
        lambda **fields: log.warning("mesh_report_refused", **fields),
        lambda **fields: log.warning("mesh_report_refused_summary", **fields),
        interval,
    )
