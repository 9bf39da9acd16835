"""Shared benchmark plumbing: build the C helpers, time things, print a table, write JSON."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def build_c(name: str) -> str | None:
    """Compile benchmarks/c/<name>.c with cc -O2; None (and a note) when there is no compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print(f"note: no C compiler: skipping what needs {name}.c", file=sys.stderr)
        return None
    out = Path(tempfile.gettempdir()) / "smsupervise-bench" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    source = HERE / "c" / f"{name}.c"
    if not out.exists() or out.stat().st_mtime < source.stat().st_mtime:
        subprocess.run([cc, "-O2", "-o", str(out), str(source)], check=True)
    return str(out)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_command(argv: list[str], runs: int, warmup: int = 3) -> list[float]:
    """Wall-clock seconds of each run of ``argv`` (output discarded)."""
    samples = []
    for index in range(warmup + runs):
        begun = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if index >= warmup:
            samples.append(time.perf_counter() - begun)
    return samples


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path
