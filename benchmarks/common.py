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


class StatusPoller:
    """A debug client asking ``status`` every ``interval`` s over ``socket_path`` (in a thread), with
    the round-trip time of every answer. Waits for the socket to appear; ends at ``stop()`` or when
    the supervisor is gone."""

    def __init__(self, socket_path: str, interval: float = 0.1) -> None:
        import threading

        self.path = socket_path
        self.interval = interval
        self.latencies_ms: list[float] = []
        self.records: list[int] = []  # the job's stdout records each answer reported (-1: not said)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from smsupervise.debug.client import ClientError, call

        while not self._stop.is_set() and not os.path.exists(self.path):
            self._stop.wait(0.005)
        while not self._stop.is_set():
            begun = time.perf_counter()
            try:
                answer = call(self.path, "status")
            except (ClientError, OSError):
                if self.latencies_ms:
                    return  # the supervisor has gone
                self._stop.wait(0.005)  # bound but not listening yet: ask again
                continue
            self.latencies_ms.append((time.perf_counter() - begun) * 1000)
            streams = answer.get("streams") if isinstance(answer, dict) else None
            stdout = streams.get("stdout") if isinstance(streams, dict) else None
            self.records.append(int(stdout["records"]) if isinstance(stdout, dict) else -1)
            self._stop.wait(self.interval)
