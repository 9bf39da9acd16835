"""Log relay benchmark: a child writes 2,000,000 lines of 100 bytes; smsupervise turns each into a
JSON object. Beside it, in the same run: no relay, `cat`, and an asyncio readline + json.dumps relay;
then the same lines from a Python child (64 KiB writes), 20-byte lines, and smsupervise searching
every chunk for a progress pattern (the stall watchdog's seam, streams/watch.py: one that never
matches, one that every line matches).

    python -m benchmarks.logs [--lines N] [--runs R]

Reports lines/s and the relay's own CPU seconds per million lines (median of R runs), prints a
table with the targets, and writes benchmarks/results/logs.json. ``relay()`` is one run of one
smsupervise case, for benchmarks/compare.py (which runs it for two versions).
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
# The benchmark-only switch of streams/watch.py (spelled out: an older smsupervise has no such module).
PATTERN_ENV = "SMSUPERVISE_BENCH_PROGRESS_PATTERN"
NEVER = r"^Epoch \d+/\d+ .*loss="  # matches none of the child's lines: every chunk is searched whole
ALWAYS = r"x{20}"  # every line matches: one search a second
# A Python child writing N lines of SIZE bytes (SIZE-1 'x' and a newline) in blocks of ~64 KiB.
PY_CHILD = (
    "import sys\n"
    "n, size = int(sys.argv[1]), int(sys.argv[2])\n"
    "line = b'x' * (size - 1) + b'\\n'\n"
    "per = max(1, 65536 // size)\n"
    "block, out = line * per, sys.stdout.buffer\n"
    "for _ in range(n // per):\n"
    "    out.write(block)\n"
    "out.write(line * (n % per))\n"
)


def python_child(lines: int, size: int) -> list[str]:
    """The argv of the Python child (this interpreter) writing ``lines`` lines of ``size`` bytes."""
    return [PY, "-c", PY_CHILD, str(lines), str(size)]


def relay(
    python: str, lines: int, size: int = 100, pattern: str | None = None, socket_option: bool = True
) -> dict[str, float]:
    """One run of smsupervise (run by ``python``, so: the one installed for it) relaying the Python
    child's ``lines`` lines of ``size`` bytes to /dev/null, with the control socket off
    (``socket_option``: the version has ``--control-socket``) and ``pattern`` searched by the
    stall watchdog's seam; lines/s and smsupervise's own CPU seconds per million lines."""
    argv = [python, "-m", "smsupervise", "--log-level", "info"]
    argv += ["--control-socket", "none"] if socket_option else []
    env = {key: value for key, value in os.environ.items() if key != PATTERN_ENV}
    if pattern is not None:
        env[PATTERN_ENV] = pattern
    wall, cpu = _wall_and_cpu([*argv, *python_child(lines, size)], own_cpu=r'"cpu_s":([\d.]+)', env=env)
    return {"lines_per_s": lines / wall, "cpu_s_per_million": cpu / (lines / 1e6)}


def _wall_and_cpu(
    argv: list[str],
    stdout_to: str = "/dev/null",
    own_cpu: str | None = None,
    poller: StatusPoller | None = None,
    env: dict[str, str] | None = None,
) -> tuple[float, float]:
    """Run ``argv`` with stdout to ``stdout_to``; wall seconds and the relay's CPU seconds.

    ``own_cpu``: a regex on stderr giving the relay's own CPU (for relays that reap the writer, whose
    CPU wait4 would add in); otherwise the CPU of the whole command from wait4.
    """
    with open(stdout_to, "wb") as sink:
        begun = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.PIPE, env=env)
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


PYTHON_CHILD = "smsupervise (json, Python child)"
SHORT = "smsupervise (json, Python child, 20 B lines)"
PATTERN_NEVER = "smsupervise (json, Python child, a progress pattern that never matches)"
PATTERN_ALWAYS = "smsupervise (json, Python child, a progress pattern on every line)"


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
        PYTHON_CHILD: ([*sms, *python_child(args.lines, 100)], r'"cpu_s":([\d.]+)'),
        SHORT: ([*sms, *python_child(args.lines, 20)], r'"cpu_s":([\d.]+)'),
        PATTERN_NEVER: ([*sms, *python_child(args.lines, 100)], r'"cpu_s":([\d.]+)'),
        PATTERN_ALWAYS: ([*sms, *python_child(args.lines, 100)], r'"cpu_s":([\d.]+)'),
    }
    envs = {PATTERN_NEVER: NEVER, PATTERN_ALWAYS: ALWAYS}
    status_ms: list[float] = []
    results: dict[str, dict[str, float]] = {}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(args.runs):  # interleaved, so a slow spell of the VM hits every case alike
        for name, (argv, own) in cases.items():
            poller = StatusPoller(sock) if name == POLLED else None
            env = {**os.environ, PATTERN_ENV: envs[name]} if name in envs else None
            samples[name].append(_wall_and_cpu(argv, own_cpu=own, poller=poller, env=env))
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
    load = os.getloadavg()
    print_table(
        f"{args.lines:,} lines of 100 B (but where said), median of {args.runs} "
        f"(`python -m benchmarks.logs`; "
        f"load average {load[0]:.2f}, {os.cpu_count()} CPUs)",
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
    short, never = results[SHORT], results[PATTERN_NEVER]
    checks = {
        ">= 2,500,000 lines/s": ours["lines_per_s"] >= 2.5e6,
        "<= 0.4 CPU-s per million lines": ours["relay_cpu_s_per_million"] <= 0.4,
        "20 B lines: >= 3,000,000 lines/s": short["lines_per_s"] >= 3e6,
        "a progress pattern that never matches: >= 0.95x the lines/s (Python child)": never["lines_per_s"]
        >= 0.95 * results[PYTHON_CHILD]["lines_per_s"],
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
            "load_average": load,
            "results": results,
            "status_ms": {"median": median(status_ms), "p99": pct(status_ms, 0.99), "n": len(status_ms)},
            "status_idle_ms": {"median": median(idle.latencies_ms), "p99": pct(idle.latencies_ms, 0.99)},
            "targets": checks,
        },
    )


if __name__ == "__main__":
    main()
