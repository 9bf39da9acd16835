"""This working tree against another version, figure by figure, in one interleaved run.

    python -m benchmarks.compare [REF ...] [--rounds N] [--figures NAMES] [--lines N] [--keep]
    make bench-compare [REF=...]

Each REF (default: the last release tag, else origin/main, else main) and the working tree (its tracked
and untracked files, uncommitted changes included) are each copied to a temporary directory and
`pip install`ed into a venv of their own, the same way, so both run as installed (bytecode compiled
at install). Each figure is then measured by a worker process run by that venv's Python
(``python -m benchmarks.compare --worker FIGURE``, with this tree's ``benchmarks`` on the path):
the existing benchmarks (logs.py, pid1.py, status.py, pipe.py) measure it, and since they run
``sys.executable -m smsupervise``, they run that version. Rounds alternate which version goes first,
so a slow spell of this shared machine hits all; the figure is the median of the rounds.

Figures (``--figures``, comma-separated; all by default):

* ``logs100``, ``logs20``: the log relay, lines/s and smsupervise's CPU seconds per million lines
  (a Python child writing N lines of 100 or 20 bytes, stdout to /dev/null, socket off);
* ``pattern``: the same with a progress pattern searched (the stall watchdog's seam; a version
  without it relays as usual, so the ratio is the pattern's cost against that version);
* ``startup``: start+exit of ``smsupervise /bin/true`` over the Python floor (``import asyncio,
  uvloop``) of the same interpreter;
* ``term``, ``term_pid1``: ``kill -TERM`` to the child's handler, as subreaper and as PID 1 (root),
  over tini's in the same runs;
* ``pipe``: Pipe mode, one channel, GB/s over one C splice relay's (a short benchmarks/pipe.py);
* ``status``: the ``status`` round trip (p99) while a child floods 100-byte lines.

A figure a version cannot run (an option it does not have) is shown as ``n/a``. Prints the table
(per figure: the tree's, each reference's, tree / each reference and which way is better) and writes
benchmarks/results/compare.json with every sample. Speeds are not asserted anywhere: read the
ratios (benchmarks/README.md says how, and what the last comparison gave).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.common import ROOT, median, print_table, write_json

FIGURES = ("logs100", "logs20", "pattern", "startup", "term", "term_pid1", "pipe", "status")
# What each figure reports: (key, unit, True when higher is better); the first is the headline.
KEYS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "logs100": (("lines_per_s", "M lines/s", True), ("cpu_s_per_million", "CPU s / M lines", False)),
    "logs20": (("lines_per_s", "M lines/s", True), ("cpu_s_per_million", "CPU s / M lines", False)),
    "pattern": (("lines_per_s", "M lines/s", True), ("cpu_s_per_million", "CPU s / M lines", False)),
    "startup": (("x_floor", "x python floor", False), ("ms", "ms", False)),
    "term": (("x_tini", "x tini", False), ("us", "us", False)),
    "term_pid1": (("x_tini", "x tini", False), ("us", "us", False)),
    "pipe": (("x_c_relay", "x C splice relay", True), ("gb_per_s", "GB/s", True)),
    "status": (("p99_ms", "ms p99", False), ("lines_per_s", "M lines/s", True)),
}
# The options a figure needs the version to have.
NEEDS = {"term": "--control-socket", "term_pid1": "--control-socket", "status": "--control-socket"}
NEEDS["pipe"] = "--pipe-relay"


class Side(NamedTuple):
    """One version, installed: its label, where its source came from, its venv's Python."""

    label: str
    source: str
    python: str
    options: str  # its `smsupervise --help`, to know which options it has


# -- building the two versions --------------------------------------------------------------------
def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def default_ref() -> str:
    """The last release tag; else origin/main; else main (a fresh clone has origin/main)."""
    for attempt in (("describe", "--tags", "--abbrev=0"), ("rev-parse", "--verify", "-q", "origin/main")):
        try:
            found = _git(*attempt)
        except subprocess.CalledProcessError:
            continue
        if found:
            return attempt[-1] if attempt[0] == "rev-parse" else found
    return "main"


def _copy_tree(dest: Path) -> None:
    """The working tree as it is: tracked files (changes included) and untracked, not ignored ones."""
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _copy_ref(ref: str, dest: Path) -> None:
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def build(label: str, source: str, fill: Callable[[Path], None], tmp: Path) -> Side:
    """Copy a version with ``fill``, install it into a venv of its own; the installed Side."""
    src, venv = tmp / label / "src", tmp / label / "venv"
    src.mkdir(parents=True)
    fill(src)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    print(f"installing {label} ({source}) into {venv} ...", flush=True)
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)], check=True
    )
    shown = subprocess.run(
        [python, "-m", "smsupervise", "--help"], capture_output=True, text=True, check=False
    )
    return Side(label, source, python, shown.stdout + shown.stderr)


# -- one figure, in a worker run by the version's own Python -------------------------------------
def measure(figure: str, params: dict[str, Any]) -> dict[str, float]:
    """Run in the worker: ``sys.executable`` is the version's interpreter."""
    py = sys.executable
    if figure in ("logs100", "logs20", "pattern"):
        from benchmarks import logs

        size = 20 if figure == "logs20" else 100
        pattern = logs.NEVER if figure == "pattern" else None
        return logs.relay(py, params["lines"], size, pattern, socket_option=params["socket_option"])
    if figure == "startup":
        from benchmarks import pid1

        start = pid1.bench_start(params["runs"])
        floor = start["python floor (import asyncio, uvloop)"]
        return {"ms": start["smsupervise"], "x_floor": start["smsupervise"] / floor}
    if figure in ("term", "term_pid1"):
        from benchmarks import pid1

        rows = pid1.bench_term_latency(params["runs"], as_pid1=figure == "term_pid1")
        ours, tini = median(rows.get("smsupervise", [])), median(rows.get("tini", []))
        return {"us": ours, "x_tini": ours / tini}
    if figure == "pipe":
        return _pipe(params)
    if figure == "status":
        from benchmarks import common, status

        flood = common.build_c("flood")
        if flood is None:
            return {}
        rate, _, flowing, _ = status.run_once(flood, params["seconds"], 100, status.POLLED)
        return {"p99_ms": common.pct(flowing, 0.99), "lines_per_s": rate}
    raise ValueError(f"unknown figure {figure!r}: one of {', '.join(FIGURES)}")


def _pipe(params: dict[str, Any]) -> dict[str, float]:
    """smsupervise's Pipe relay and one C splice relay, one channel, ``runs`` alternating runs each."""
    from benchmarks import common, pipe

    built = {name: common.build_c(name) for name in ("pipeprod", "pipecons", "csplice")}
    if None in built.values():
        return {}
    tools = {name: str(path) for name, path in built.items()}
    tools["producers_on"], tools["consumers_on"] = pipe.placement(False)
    nbytes = int(params["gib"] * (1 << 30))
    rates: dict[str, list[float]] = {"smsupervise": [], "c-splice": []}
    with tempfile.TemporaryDirectory(prefix="smsupervise-compare-pipe-") as tmp:
        for index in range(params["runs"]):
            order = ("smsupervise", "c-splice") if index % 2 == 0 else ("c-splice", "smsupervise")
            for case in order:
                result = pipe.run_case(case, 1, nbytes, tools, Path(tmp) / case, status_ms=[])
                rates[case].append(result["gb_per_s"])
    ours = median(rates["smsupervise"])
    return {"gb_per_s": ours, "x_c_relay": ours / median(rates["c-splice"])}


def _run_worker(side: Side, figure: str, params: dict[str, Any]) -> dict[str, float] | None:
    """One measurement of ``figure`` for ``side``; None when that version cannot run it."""
    needed = NEEDS.get(figure)
    if needed is not None and needed not in side.options:
        return None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONUNBUFFERED", None)  # the Python child writes through its buffer, as by default
    proc = subprocess.run(
        [side.python, "-m", "benchmarks.compare", "--worker", figure, "--params", json.dumps(params)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        print(f"note: {figure} failed for {side.label}: {proc.stderr[-800:]}", file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(lines[-1])
    return result or None


# -- the run --------------------------------------------------------------------------------------
def _cell(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):  # not measured
        return "n/a"
    return f"{value / 1e6:.2f}" if unit.startswith("M ") else f"{value:.3g}"


def report(sides: tuple[Side, ...], samples: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, Any]:
    """Print the table (the tree, each reference, tree / each reference); the figures for the JSON."""
    tree, refs = sides[0], sides[1:]
    rows, figures = [], {}
    for figure, by_side in samples.items():
        for key, unit, higher in KEYS[figure]:
            values = {
                side.label: median([s[key] for s in by_side[side.label] if key in s])
                if by_side[side.label]
                else None
                for side in sides
            }
            ours = values[tree.label]
            ratios = {}
            for ref in refs:
                theirs = values[ref.label]
                ratios[ref.label] = ours / theirs if ours is not None and theirs else None
            figures[f"{figure}.{key}"] = {
                "values": {side.source: values[side.label] for side in sides},
                "tree_over": {ref.source: ratios[ref.label] for ref in refs},
                "higher_is_better": higher,
            }
            rows.append(
                [
                    figure,
                    unit,
                    *(_cell(values[side.label], unit) for side in sides),
                    *("n/a" if r is None or math.isnan(r) else f"{r:.3f}" for r in ratios.values()),
                    "higher" if higher else "lower",
                ]
            )
    print_table(
        "this tree against " + ", ".join(ref.source for ref in refs) + ", medians of interleaved rounds",
        [
            "figure",
            "unit",
            "tree",
            *(ref.source for ref in refs),
            *(f"tree / {ref.label}" for ref in refs),
            "better",
        ],
        rows,
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "refs", nargs="*", metavar="REF", help="commits, tags or branches (default: see above)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median over them)")
    parser.add_argument(
        "--figures", default=",".join(FIGURES), help="comma-separated, of: " + ", ".join(FIGURES)
    )
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines per log relay run")
    parser.add_argument("--runs", type=int, default=10, help="runs within one round of startup/term/pipe")
    parser.add_argument("--gib", type=float, default=0.5, help="GiB one Pipe run moves")
    parser.add_argument("--seconds", type=float, default=3.0, help="the status flood's length")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary venvs (their path is printed)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, json.loads(args.params))))
        return 0
    figures = [name for name in args.figures.split(",") if name]
    unknown = set(figures) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figures {sorted(unknown)}: choose from {', '.join(FIGURES)}")
    if os.geteuid() != 0 and "term_pid1" in figures:
        figures.remove("term_pid1")  # PID 1 in a new PID namespace needs root
        print("note: not root: term_pid1 skipped", file=sys.stderr)
    refs = args.refs or [default_ref()]
    tmp = Path(tempfile.mkdtemp(prefix="smsupervise-compare-"))
    try:
        sides = [build("tree", f"working tree ({_git('rev-parse', '--short', 'HEAD')}+)", _copy_tree, tmp)]
        for index, ref in enumerate(refs):
            commit = _git("rev-parse", "--short", f"{ref}^{{commit}}")
            source = f"{ref} ({commit})" if not commit.startswith(ref) else commit
            sides.append(build(f"ref{index + 1}", source, lambda dest, ref=ref: _copy_ref(ref, dest), tmp))
        load_before = os.getloadavg()
        begun = time.monotonic()
        samples: dict[str, dict[str, list[dict[str, float]]]] = {
            figure: {side.label: [] for side in sides} for figure in figures
        }
        for round_index in range(args.rounds):
            for figure in figures:
                turn = round_index % len(sides)  # each round starts with another version
                order = sides[turn:] + sides[:turn]
                for side in order:
                    params = {
                        "lines": args.lines,
                        "runs": args.runs,
                        "gib": args.gib,
                        "seconds": args.seconds,
                        "socket_option": "--control-socket" in side.options,
                    }
                    result = _run_worker(side, figure, params)
                    if result is not None:
                        samples[figure][side.label].append(result)
            print(
                f"round {round_index + 1} of {args.rounds} done ({time.monotonic() - begun:.0f} s)",
                flush=True,
            )
        load_after = os.getloadavg()
        figures_out = report(tuple(sides), samples)
        print(
            f"\nload average {load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} CPUs; "
            f"{args.rounds} rounds, {time.monotonic() - begun:.0f} s"
        )
        write_json(
            "compare",
            {
                "versions": [side.source for side in sides],
                "rounds": args.rounds,
                "params": {"lines": args.lines, "runs": args.runs, "gib": args.gib, "seconds": args.seconds},
                "load_average": {"before": load_before, "after": load_after},
                "figures": figures_out,
                "samples": samples,
            },
        )
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
