"""Log relay benchmark: a child writes 2,000,000 lines of 100 bytes; smsupervise turns each into a
JSON object. Beside it, in the same run: no relay, `cat`, and an asyncio readline + json.dumps relay.

    python -m benchmarks.logs [--lines N] [--runs R]

Reports lines/s and the relay's own CPU seconds per million lines (median of R runs), prints a
table with the targets, and writes benchmarks/results/logs.json.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

from benchmarks.common import HERE, StatusPoller, build_c, median, pct, print_table, write_json

PY = sys.executable
POLLED = "smsupervise (json, socket on, status 10x/s)"


def _wall_and_cpu(
    argv: list[str],
    stdout_to: str = "/dev/null",
    own_cpu: str | None = None,
    poller: StatusPoller | None = None,
) -> tuple[float, float]:
    """Run ``argv`` with stdout to ``stdout_to``; wall seconds and the relay's CPU seconds.

    ``own_cpu``: a regex on stderr giving the relay's own CPU (for relays that reap the writer, whose
    CPU wait4 would add in); otherwise the CPU of the whole command from wait4.
    """
    with open(stdout_to, "wb") as sink:
        begun = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.PIPE)
        if poller is not None:
            with poller:
                _, err = proc.communicate()
        else:
            _, err = proc.communicate()
        wall = time.perf_counter() - begun
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err[-500:]!r}")
    if own_cpu is not None:
        match = re.search(own_cpu, err.decode())
        if match is None:
            raise RuntimeError(f"no CPU figure in {err[-300:]!r}")
        return wall, float(match.group(1))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    gen = build_c("gen")
    if gen is None:
        sys.exit("needs a C compiler for the line generator")
    n = str(args.lines)
    sms = [PY, "-m", "smsupervise", "--log-level", "info", "--control-socket", "none"]
    sock = os.path.join(tempfile.mkdtemp(prefix="smsupervise-bench-"), "control.sock")
    polled = [PY, "-m", "smsupervise", "--log-level", "info", "--control-socket", sock]
    cases: dict[str, tuple[list[str], str | None]] = {
        "no relay (child -> /dev/null)": ([gen, n], None),
        "cat": (["sh", "-c", f"{gen} {n} | cat"], None),
        "readline + json.dumps (asyncio)": ([PY, str(HERE / "readline_relay.py"), gen, n], r"cpu_s=([\d.]+)"),
        "smsupervise (json)": ([*sms, gen, n], r'"cpu_s":([\d.]+)'),
        "smsupervise (json, stdout a pipe to cat)": (["sh", "-c", f"{' '.join(sms)} {gen} {n} | cat"], None),
        POLLED: ([*polled, gen, n], r'"cpu_s":([\d.]+)'),
    }
    status_ms: list[float] = []
    results: dict[str, dict[str, float]] = {}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(args.runs):  # interleaved, so a slow spell of the VM hits every case alike
        for name, (argv, own) in cases.items():
            poller = StatusPoller(sock) if name == POLLED else None
            samples[name].append(_wall_and_cpu(argv, own_cpu=own, poller=poller))
            status_ms += poller.latencies_ms if poller is not None else []
    gen_cpu = median([c for _, c in samples["no relay (child -> /dev/null)"]])
    rows = []
    for name, runs in samples.items():
        wall = median([w for w, _ in runs])
        cpu = median([c for _, c in runs])
        if name in ("cat", "smsupervise (json, stdout a pipe to cat)"):
            cpu -= gen_cpu  # wait4 counted the writer too
        per_million = cpu / (args.lines / 1e6) if name != "no relay (child -> /dev/null)" else float("nan")
        results[name] = {
            "wall_s": wall,
            "lines_per_s": args.lines / wall,
            "relay_cpu_s_per_million": per_million,
        }
        rows.append([name, f"{wall:.2f}", f"{args.lines / wall / 1e6:.2f} M", f"{per_million:.2f}"])
    print_table(
        f"{args.lines:,} lines of 100 B, median of {args.runs} (`python -m benchmarks.logs`)",
        ["case", "wall s", "lines/s", "relay CPU s / 1M lines"],
        rows,
    )
    idle = StatusPoller(sock)
    _wall_and_cpu([*polled, "sleep", "3"], poller=idle)  # the same client, nothing to relay
    print_table(
        "`status` round trip, a client asking 10x/s (ms)",
        ["supervisor", "answers", "median", "p99", "max"],
        [
            [name, len(ms), f"{median(ms):.2f}", f"{pct(ms, 0.99):.2f}", f"{max(ms, default=0):.2f}"]
            for name, ms in (("idle (sleep 3)", idle.latencies_ms), (f"relaying {n} lines", status_ms))
        ],
    )
    ours, baseline = results["smsupervise (json)"], results["readline + json.dumps (asyncio)"]
    checks = {
        ">= 1,000,000 lines/s": ours["lines_per_s"] >= 1e6,
        "<= 1.0 CPU-s per million lines": ours["relay_cpu_s_per_million"] <= 1.0,
        ">= 5x the readline relay (lines/s)": ours["lines_per_s"] >= 5 * baseline["lines_per_s"],
        "status polled 10x/s: >= 0.95x the lines/s": results[POLLED]["lines_per_s"]
        >= 0.95 * ours["lines_per_s"],
        "status answered in < 10 ms (p99)": bool(status_ms) and pct(status_ms, 0.99) < 10,
    }
    print_table("targets", ["target", "met"], [[k, "yes" if v else "NO"] for k, v in checks.items()])
    write_json(
        "logs",
        {
            "lines": args.lines,
            "runs": args.runs,
            "cpus": os.cpu_count(),
            "results": results,
            "status_ms": {"median": median(status_ms), "p99": pct(status_ms, 0.99), "n": len(status_ms)},
            "status_idle_ms": {"median": median(idle.latencies_ms), "p99": pct(idle.latencies_ms, 0.99)},
            "targets": checks,
        },
    )


if __name__ == "__main__":
    main()
