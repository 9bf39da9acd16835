"""From the runs to what a person should do about them (pure functions).

A run is **input-bound** when the reader waited for data longer than data waited for it, or (when
neither waited much) got the stream at nearly the full rate: the platform's rate is the limit, and
faster S3 throughput would speed training up. It is **trainer-bound** otherwise: the reader is the
limit, and Pipe mode is not the bottleneck. The time before the reader opens an epoch (its
start-up) counts for neither. The reader's own speed is what it reached when it was the limit; the
crossover is about there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from smsupervise.pipebench.results import RunResult

WAITED = 0.2  # waits this share of the reading time decide; below it, the rate and MB/s do
KEPT_UP = 0.9  # delivered at >= 90 % of the rate: the reader took what the platform would give
Bound = Literal["input-bound", "trainer-bound", "closed early", "failed"]
Kind = Literal["input-bound", "trainer-bound", "input-bound below", "no measurement"]


@dataclass(frozen=True)
class Verdict:
    """The bottom line, and notes that qualify it."""

    kind: Kind
    text: str
    reader_mb_per_s: float | None  # the fastest the reader read (while it had epochs open)
    ceiling_mb_per_s: float | None  # `cat` in the same harness
    notes: tuple[str, ...]


def speed(mb_per_s: float | None) -> str:
    """MB/s for people: ``750 MB/s``, ``1.9 GB/s``."""
    if mb_per_s is None:
        return "-"
    if mb_per_s >= 1000:
        return f"{mb_per_s / 1000:.1f} GB/s"
    return f"{mb_per_s:.3g} MB/s" if mb_per_s < 10 else f"{mb_per_s:.0f} MB/s"


def rate_label(rate: float | None) -> str:
    return "unlimited" if rate is None else speed(rate)


def bound(run: RunResult) -> Bound:
    """What limited one run."""
    if run.problem is not None:
        return "failed"
    if not run.complete:
        return "closed early"
    reading = sum(epoch.reading_s for epoch in run.complete)
    if run.starved_s + run.bound_s >= WAITED * reading:
        return "input-bound" if run.starved_s > run.bound_s else "trainer-bound"
    # Neither waited much: the reader took all the platform would give, at its rate.
    kept_up = run.rate is not None and (run.mb_per_s or 0.0) >= KEPT_UP * run.rate
    return "input-bound" if kept_up else "trainer-bound"


def _ceiling(runs: Sequence[RunResult]) -> tuple[float | None, str | None]:
    cat = next((run for run in runs if run.reader == "cat"), None)
    if cat is None:
        return None, None
    if cat.mb_per_s is None:
        return None, f"the `cat` ceiling gave no figure: {cat.problem or 'no epoch was read to EOF'}"
    return cat.mb_per_s, None


def _notes(runs: Sequence[RunResult], reader: float | None, ceiling: float | None) -> list[str]:
    notes = []
    for run in runs:
        for epoch in run.epochs:
            if epoch.ended == "closed early":
                notes.append(
                    f"{run.reader} at {rate_label(run.rate)}: epoch {epoch.epoch} of {epoch.channel} was "
                    f"closed early by the reader after {epoch.bytes / 1e6:.1f} MB, so it has no throughput "
                    "(fine if your reader stops epochs on purpose; otherwise it misses data)"
                )
    if reader is not None and ceiling is not None and reader >= 0.8 * ceiling:
        notes.append(
            f"your reader ran at {reader / ceiling:.0%} of `cat` here: this machine and harness are "
            "the limit, so its own speed is at least what it reached"
        )
    return notes


def judge(runs: Sequence[RunResult]) -> Verdict:
    """The verdict over all the reader's runs, with `cat` as the ceiling."""
    ceiling, ceiling_note = _ceiling(runs)
    measured = [
        run for run in runs if run.reader == "reader" and bound(run) in ("input-bound", "trainer-bound")
    ]
    fastest = max((run.reading_mb_per_s or 0.0 for run in measured), default=None)
    notes = _notes(runs, fastest, ceiling) + ([ceiling_note] if ceiling_note else [])
    if not measured:
        failed = next((run.problem for run in runs if run.reader == "reader" and run.problem), None)
        text = f"no measurement: {failed}" if failed else "no measurement: no epoch was read to EOF"
        return Verdict("no measurement", text, None, ceiling, tuple(notes))
    starved = [run for run in measured if bound(run) == "input-bound"]
    limited = [run for run in measured if bound(run) == "trainer-bound"]
    versus = f" (`cat`: {speed(ceiling)})" if ceiling else ""
    if not limited:
        top = rate_label(max(starved, key=lambda run: run.rate or float("inf")).rate)
        text = (
            f"input-bound at every rate tried (up to {top}): your reader kept up with the stream, "
            f"up to {speed(fastest)}{versus}, and waits for data below what it can take; "
            "a higher --rate (or unlimited) shows where it turns trainer-bound"
        )
        return Verdict("input-bound", text, fastest, ceiling, tuple(notes))
    own = max(run.reading_mb_per_s or 0.0 for run in limited)
    if not starved:
        lowest = rate_label(min(limited, key=lambda run: run.rate or float("inf")).rate)
        text = (
            f"trainer-bound at every rate tried (from {lowest}): your reader takes {speed(own)} at "
            f"most{versus}, so Pipe mode is not your bottleneck; to go faster, speed up the reader "
            "(decoding, per-record work, batching)"
        )
        return Verdict("trainer-bound", text, own, ceiling, tuple(notes))
    text = (
        f"input-bound below ~{speed(own)}: the reader consumes up to {speed(own)}{versus}. With less "
        "throughput per channel it waits for data (more S3 throughput, a bigger instance, or "
        "File/FastFile mode would speed training up); with more, Pipe mode is not your bottleneck "
        "and only a faster reader helps"
    )
    return Verdict("input-bound below", text, own, ceiling, tuple(notes))
