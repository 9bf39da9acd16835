"""The results as a table for people, JSON for machines (a versioned schema) and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import orjson

from smsupervise.pipebench.options import BenchOptions
from smsupervise.pipebench.results import RunResult
from smsupervise.pipebench.verdict import Verdict, bound, rate_label, speed

SCHEMA = "smsupervise-pipe-bench/1"  # bump on any change to the keys or their meaning

EPOCH_KEYS = (
    "channel",
    "epoch",
    "ended",
    "bytes",
    "seconds",
    "mb_per_s",
    "reading_mb_per_s",
    "sent_mb_per_s",
    "ttfb_s",
    "wait_open_s",
    "input_starved_s",
    "trainer_bound_s",
)
CSV_COLUMNS = ("reader", "rate_mb_per_s", *EPOCH_KEYS, "run_mb_per_s", "reader_cpu_s", "bound")


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _cpu_per_gb(run: RunResult) -> float | None:
    if run.reader_cpu_s is None or not run.bytes:
        return None
    return run.reader_cpu_s / (run.bytes / 1e9)


def run_document(run: RunResult) -> dict[str, Any]:
    """One run in the JSON schema."""
    return {
        "reader": run.reader,
        "rate_mb_per_s": run.rate,
        "bound": bound(run),
        "mb_per_s": _round(run.mb_per_s, 1),
        "reading_mb_per_s": _round(run.reading_mb_per_s, 1),
        "bytes": run.bytes,
        "input_starved_s": _round(run.starved_s),
        "trainer_bound_s": _round(run.bound_s),
        "reader_cpu_s": _round(run.reader_cpu_s),
        "reader_cpu_s_per_gb": _round(_cpu_per_gb(run)),
        "exit_code": run.exit_code,
        "wall_s": _round(run.wall_s),
        "problem": run.problem,
        "epochs": [
            {
                "channel": e.channel,
                "epoch": e.epoch,
                "ended": e.ended,
                "bytes": e.bytes,
                "seconds": _round(e.seconds, 6),
                "mb_per_s": _round(e.mb_per_s, 1),
                "reading_mb_per_s": _round(
                    e.bytes / e.reading_s / 1e6 if e.mb_per_s and e.reading_s else None, 1
                ),
                "sent_mb_per_s": _round(e.sent_mb_per_s, 2),
                "ttfb_s": _round(e.ttfb_s, 6),
                "wait_open_s": _round(e.wait_open_s, 6),
                "input_starved_s": _round(e.input_starved_s, 6),
                "trainer_bound_s": _round(e.trainer_bound_s, 6),
            }
            for e in run.epochs
        ],
    }


def document(options: BenchOptions, runs: Sequence[RunResult], verdict: Verdict) -> dict[str, Any]:
    """The whole result in the JSON schema ``SCHEMA``."""
    return {
        "schema": SCHEMA,
        "command": list(options.command),
        "options": {
            "channels": [{"name": c.name, "path": c.path} for c in options.channels],
            "epochs": options.epochs,
            "recordio": options.recordio,
            "gzip": options.gzip,
            "relay": options.relay,
            "rates_mb_per_s": list(options.rates),
        },
        "runs": [run_document(run) for run in runs],
        "verdict": {
            "kind": verdict.kind,
            "text": verdict.text,
            "reader_mb_per_s": _round(verdict.reader_mb_per_s, 1),
            "ceiling_mb_per_s": _round(verdict.ceiling_mb_per_s, 1),
            "notes": list(verdict.notes),
        },
    }


def to_json(options: BenchOptions, runs: Sequence[RunResult], verdict: Verdict) -> str:
    return orjson.dumps(document(options, runs, verdict), option=orjson.OPT_INDENT_2).decode() + "\n"


def to_csv(runs: Sequence[RunResult]) -> str:
    """One row per run, channel and epoch; the run's figures repeated on each of its rows."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in runs:
        whole = run_document(run)
        for epoch in whole["epochs"]:
            row = [run.reader, run.rate, *(epoch[key] for key in EPOCH_KEYS)]
            writer.writerow([*row, whole["mb_per_s"], whole["reader_cpu_s"], whole["bound"]])
    return out.getvalue()


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return [line.rstrip() for line in lines]


def epoch_table(runs: Sequence[RunResult]) -> list[str]:
    """Per run, channel and epoch."""
    header = (
        "reader",
        "rate",
        "channel",
        "epoch",
        "MB",
        "MB/s",
        "TTFB s",
        "open s",
        "starved s",
        "bound s",
        "ended",
    )
    rows = [
        (
            run.reader,
            rate_label(run.rate),
            e.channel,
            str(e.epoch),
            f"{e.bytes / 1e6:.1f}",
            _fmt(e.mb_per_s, ".1f"),
            _fmt(e.ttfb_s, ".3f"),
            f"{e.wait_open_s:.3f}",
            f"{e.input_starved_s:.3f}",
            f"{e.trainer_bound_s:.3f}",
            e.ended,
        )
        for run in runs
        for e in run.epochs
    ]
    return _grid(header, rows)


def run_table(runs: Sequence[RunResult]) -> list[str]:
    """Per run: what the reader got, where the time went, its CPU, and what bound it."""
    header = (
        "reader",
        "rate",
        "MB/s",
        "reading MB/s",
        "starved",
        "bound",
        "reader CPU s",
        "CPU s/GB",
        "verdict",
    )
    rows = []
    for run in runs:
        total = run.starved_s + run.bound_s
        rows.append(
            (
                run.reader,
                rate_label(run.rate),
                _fmt(run.mb_per_s, ".1f"),
                _fmt(run.reading_mb_per_s, ".1f"),
                f"{run.starved_s / total:.0%}" if total else "-",
                f"{run.bound_s / total:.0%}" if total else "-",
                _fmt(run.reader_cpu_s, ".2f"),
                _fmt(_cpu_per_gb(run), ".2f"),
                bound(run),
            )
        )
    return _grid(header, rows)


def to_table(options: BenchOptions, runs: Sequence[RunResult], verdict: Verdict, chart: list[str]) -> str:
    """Everything for people: the tables, the chart, problems and the verdict."""
    how = "through smsupervise's relay" if options.relay else "straight from the platform's FIFOs"
    lines = [f"Pipe-mode bench of: {' '.join(options.command)}  ({how}; MB/s per channel)", ""]
    lines += [*epoch_table(runs), "", *run_table(runs), "", *chart, ""]
    for run in runs:
        if run.problem:
            lines.append(f"problem ({run.reader} at {rate_label(run.rate)}): {run.problem}")
    lines.append(f"verdict: {verdict.text}")
    lines += [f"note: {note}" for note in verdict.notes]
    if verdict.ceiling_mb_per_s is not None:
        lines.append(f"ceiling: `cat` read {speed(verdict.ceiling_mb_per_s)} in this harness")
    return "\n".join(lines) + "\n"
