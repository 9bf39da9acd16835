"""`status` under a flood of output: a child prints lines as fast as it can for S seconds while a client
asks smsupervise for `status` 10 times a second; beside it, in the same interleaved runs, the same
child with the socket off and with the socket on but nobody asking.

    python -m benchmarks.status [--seconds S] [--runs R] [--sizes 100,20] [--baseline DIR]

``--baseline DIR``: also the polled case with the smsupervise package found in DIR (e.g. the
``supervisor`` folder of a git worktree of an older commit), in the same interleaved runs.

Reports, per line size, lines/s and the relay's CPU seconds per million lines of each case, and the
`status` round trip of the polled case (p50/p99/max over every question asked while the output
flowed, i.e. after an answer that counted stdout records: the target's condition), in one table,
with the round trip of the same client to an idle smsupervise (child `sleep`) in the same runs: the
floor this machine's scheduler gives right now. The questions asked before the output flowed are
shown apart (how many, the slowest): the client connects as soon as the socket exists, which is
before the job is spawned, so its first answer waits for the rest of smsupervise's start-up and
the server's import at the first connection. Writes benchmarks/results/status.json; the load
average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks.common import StatusPoller, build_c, median, pct, print_table, write_json

PY = sys.executable
SMS = [PY, "-m", "smsupervise", "--log-level", "info"]
POLLED = "socket on, status 10x/s"
BASELINE = "baseline: socket on, status 10x/s"
CASES = ("socket off", "socket on, no client", POLLED)
FLOOD = re.compile(r"flood lines=(\d+) seconds=([\d.]+)")
CPU = re.compile(r'"cpu_s":([\d.]+)')


def while_flowing(poller: StatusPoller) -> tuple[list[float], list[float]]:
    """The round trips (ms) of the questions asked while the job's output was flowing (the answer
    before said stdout records > 0), and the others: those asked during smsupervise's start-up (the
    socket is bound before the job is spawned, so the first question waits for the spawn and the
    server's import at the first connection) or before the child's first line."""
    flowing: list[float] = []
    before: list[float] = []
    previous = 0
    for ms, records in zip(poller.latencies_ms, poller.records, strict=True):
        (flowing if previous > 0 else before).append(ms)
        previous = records
    return flowing, before


def run_once(
    flood: str, seconds: float, size: int, case: str, baseline: str | None = None
) -> tuple[float, float, list[float], list[float]]:
    """One flood under smsupervise: (lines/s, relay CPU s per million lines, status round trips ms
    while the output flowed, round trips ms of the questions asked before)."""
    env = {**os.environ, "PYTHONPATH": baseline} if case == BASELINE and baseline else None
    sock = os.path.join(tempfile.mkdtemp(prefix="smsupervise-bench-"), "control.sock")
    argv = [
        *SMS,
        "--control-socket",
        "none" if case == "socket off" else sock,
        flood,
        str(seconds),
        str(size),
    ]
    poller = StatusPoller(sock) if case in (POLLED, BASELINE) else None
    with open(os.devnull, "wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.PIPE, env=env)
        if poller is not None:
            with poller:
                _, err = proc.communicate()
        else:
            _, err = proc.communicate()
    text = err.decode(errors="replace")
    written, cpu = FLOOD.search(text), CPU.search(text)
    if proc.returncode != 0 or written is None or cpu is None:
        raise RuntimeError(f"flood under smsupervise failed ({proc.returncode}): {text[-500:]!r}")
    lines, took = int(written.group(1)), float(written.group(2))
    flowing, before = while_flowing(poller) if poller else ([], [])
    return lines / took, float(cpu.group(1)) / (lines / 1e6), flowing, before


def idle_once(seconds: float) -> list[float]:
    """The same client against smsupervise whose child sleeps: status round trips (ms)."""
    sock = os.path.join(tempfile.mkdtemp(prefix="smsupervise-bench-"), "control.sock")
    poller = StatusPoller(sock)
    with poller:
        subprocess.run(
            [*SMS, "--control-socket", sock, "sleep", str(seconds)], capture_output=True, check=True
        )
    return poller.latencies_ms


def _latency_cells(ms: list[float]) -> list[str]:
    return [str(len(ms)), f"{median(ms):.2f}", f"{pct(ms, 0.99):.2f}", f"{max(ms, default=0):.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sizes", default="100,20", help="line sizes in bytes, newline included")
    parser.add_argument("--baseline", help="a directory holding another smsupervise package to compare")
    args = parser.parse_args()
    cases = (*CASES, BASELINE) if args.baseline else CASES
    flood = build_c("flood")
    if flood is None:
        sys.exit("needs a C compiler for the flooding child")
    sizes = [int(size) for size in args.sizes.split(",")]
    load_before = os.getloadavg()
    samples: dict[tuple[int, str], list[tuple[float, float]]] = {(s, c): [] for s in sizes for c in cases}
    latencies: dict[tuple[int, str], list[float]] = {(s, c): [] for s in sizes for c in cases}
    startup: dict[tuple[int, str], list[float]] = {(s, c): [] for s in sizes for c in cases}
    idle: list[float] = []
    for _ in range(args.runs):  # interleaved, so a slow spell of the VM hits every case alike
        idle += idle_once(args.seconds)
        for size in sizes:
            for case in cases:
                rate, cpu, ms, early = run_once(flood, args.seconds, size, case, args.baseline)
                samples[size, case].append((rate, cpu))
                latencies[size, case] += ms
                startup[size, case] += early
    load_after = os.getloadavg()
    rows = [["-", "idle (child sleeps), status 10x/s", "", "", "", *_latency_cells(idle), ""]]
    results: list[dict[str, Any]] = []
    for size in sizes:
        off = median([rate for rate, _ in samples[size, "socket off"]])
        for case in cases:
            rate = median([r for r, _ in samples[size, case]])
            cpu = median([c for _, c in samples[size, case]])
            ms = latencies[size, case]
            early = startup[size, case]
            results.append(
                {
                    "line_bytes": size,
                    "case": case,
                    "lines_per_s": rate,
                    "x_socket_off": rate / off,
                    "relay_cpu_s_per_million": cpu,
                    "status_ms": {
                        "n": len(ms),
                        "p50": median(ms),
                        "p99": pct(ms, 0.99),
                        "max": max(ms, default=0),
                    }
                    if ms
                    else None,
                    "status_before_output_ms": {"n": len(early), "max": max(early)} if early else None,
                }
            )
            rows.append(
                [
                    f"{size} B",
                    case,
                    f"{rate / 1e6:.2f} M",
                    f"{rate / off:.2f}",
                    f"{cpu:.2f}",
                    *(_latency_cells(ms) if ms else ["", "", "", ""]),
                    f"{len(early)}, {max(early):.2f}" if early else "",
                ]
            )
    load = f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} CPUs"
    print_table(
        f"a child printing as fast as it can for {args.seconds:g} s, median of {args.runs} "
        f"(`python -m benchmarks.status`; {load})",
        [
            "line",
            "case",
            "lines/s",
            "x socket off",
            "relay CPU s / 1M lines",
            "answers",
            "p50 ms",
            "p99 ms",
            "max ms",
            "asked before output: n, max ms",
        ],
        rows,
    )
    polled = [r for r in results if r["case"] == POLLED]
    checks = {
        f"status answered in < 10 ms (p99), {r['line_bytes']} B lines": r["status_ms"]["p99"] < 10
        for r in polled
    }
    checks.update(
        {
            f"status polled 10x/s: >= 0.95x the lines/s, {r['line_bytes']} B lines": r["x_socket_off"] >= 0.95
            for r in polled
        }
    )
    print_table("targets", ["target", "met"], [[k, "yes" if v else "NO"] for k, v in checks.items()])
    write_json(
        "status",
        {
            "seconds": args.seconds,
            "runs": args.runs,
            "baseline": args.baseline,
            "load_average": {"before": load_before, "after": load_after},
            "idle_status_ms": {
                "n": len(idle),
                "p50": median(idle),
                "p99": pct(idle, 0.99),
                "max": max(idle, default=0),
            },
            "results": results,
            "targets": checks,
        },
    )


if __name__ == "__main__":
    main()
