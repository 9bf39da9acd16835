"""PID-1 benchmark: smsupervise beside tini, dumb-init and the bare Python floor, in one run.

    python -m benchmarks.pid1 [--runs N]

Measures start+exit of `INIT -- /bin/true`, RSS, the latency from `kill -TERM <init>` to the
child's SIGTERM handler, the time to reap 1000 orphans as PID 1, and the time from the child's
death to the init's exit. Prints a table with the targets and writes benchmarks/results/pid1.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import StatusPoller, build_c, median, pct, print_table, time_command, write_json

PY = sys.executable
SMS = [PY, "-m", "smsupervise", "--log-level", "warning"]
FLOOR = [PY, "-c", "import asyncio, uvloop"]
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]


POLLED = "smsupervise (socket on, status 10x/s)"


def inits() -> dict[str, list[str]]:
    """smsupervise as installed (control socket on, at its default path) and without the socket."""
    found = {"smsupervise": SMS, "smsupervise (socket off)": [*SMS, "--control-socket", "none"]}
    if shutil.which("tini"):
        found["tini"] = ["tini", "-s", "--"]
    if shutil.which("dumb-init"):
        found["dumb-init"] = ["dumb-init"]
    return found


def bench_start(runs: int) -> dict[str, float]:
    rows = {"python floor (import asyncio, uvloop)": FLOOR}
    rows.update({name: [*argv, "/bin/true"] for name, argv in inits().items()})
    # Interleaved (one run of each, round after round), so a slow spell of this shared VM hits the
    # floor and smsupervise alike; the ratio is what the target is about.
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for index in range(3 + max(runs, 60)):
        for name, argv in rows.items():
            (took,) = time_command(argv, 1, warmup=0)
            if index >= 3:
                samples[name].append(took)
    return {name: median(values) * 1000 for name, values in samples.items()}


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_rss() -> dict[str, float]:
    result = {}
    floor = [PY, "-c", "import asyncio, uvloop, time; print('x', flush=True); time.sleep(5)"]
    proc = subprocess.Popen(floor, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    result["python floor (import asyncio, uvloop)"] = _rss_kb(proc.pid) / 1024
    proc.kill()
    proc.wait()
    for name, argv in inits().items():
        with tempfile.TemporaryDirectory() as tmp:
            ready = Path(tmp) / "ready"
            child = [PY, "-c", f"open({str(ready)!r}, 'w').write('1'); import time; time.sleep(5)"]
            proc = subprocess.Popen([*argv, *child], stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # let the init finish logging child_spawned before sampling
            result[name] = _rss_kb(proc.pid) / 1024
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return result


def _pid1_child(unshare_pid: int) -> int:
    path = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = path.read_text().split() if path.exists() else []
        if text:
            return int(text[0])
        time.sleep(0.001)
    raise RuntimeError("unshare did not fork")


def bench_term_latency(runs: int, as_pid1: bool) -> dict[str, list[float]]:
    sigrecv = build_c("sigrecv")
    if sigrecv is None:
        return {}
    result: dict[str, list[float]] = {}
    rows = {"direct (no init)": []} if not as_pid1 else {}
    rows.update(inits())
    rows[POLLED] = [*SMS, "--control-socket", "{sock}"]
    for name, argv in rows.items():
        samples = []
        for index in range(runs + 3):
            with tempfile.TemporaryDirectory() as tmp:
                stamp, ready, sock = Path(tmp) / "stamp", Path(tmp) / "ready", str(Path(tmp) / "c.sock")
                init = [word.replace("{sock}", sock) for word in argv]
                command = [*(UNSHARE if as_pid1 else []), *init, sigrecv, str(stamp), str(ready)]
                proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
                with contextlib.ExitStack() as polling:
                    if name == POLLED:  # a debug client asks for status 10x/s, also while TERM goes out
                        polling.enter_context(StatusPoller(sock))
                    target = _pid1_child(proc.pid) if as_pid1 else proc.pid
                    while not ready.exists():
                        time.sleep(0.0005)
                    time.sleep(0.05)  # the init's own post-spawn work (logging) is not what we time
                    sent = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                    os.kill(target, signal.SIGTERM)
                    proc.wait(timeout=20)
                if index >= 3 and stamp.exists() and stamp.read_text().strip():
                    samples.append((int(stamp.read_text()) - sent) / 1000)
        result[name] = samples
    return result


def bench_reap(runs: int) -> dict[str, list[float]]:
    orphans = build_c("orphans")
    if orphans is None or os.geteuid() != 0:
        return {}
    result: dict[str, list[float]] = {}
    for name, argv in inits().items():
        samples = []
        for _ in range(runs):
            out = subprocess.run(
                [*UNSHARE, *argv, orphans, "1000"], capture_output=True, text=True, timeout=60, check=False
            ).stdout
            found = re.search(r"reaped \d+ in ([\d.]+) ms", out)  # a JSON record from smsupervise
            if found:
                samples.append(float(found.group(1)))
        result[name] = samples
    return result


def bench_exit_after_child(runs: int) -> dict[str, list[float]]:
    stamp_exit = build_c("stamp_exit")
    if stamp_exit is None:
        return {}
    result: dict[str, list[float]] = {}
    for name, argv in inits().items():
        samples = []
        for index in range(runs + 3):
            with tempfile.TemporaryDirectory() as tmp:
                stamp = Path(tmp) / "stamp"
                proc = subprocess.Popen(
                    [*argv, "sh", "-c", f"sleep 0.2; exec {stamp_exit} {stamp}"], stderr=subprocess.DEVNULL
                )
                os.waitpid(proc.pid, 0)
                ended = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                proc.returncode = 0
                if index >= 3:
                    samples.append((ended - int(stamp.read_text())) / 1e6)
        result[name] = samples
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    runs = args.runs
    # Measure what an installed package does: its bytecode is compiled once at install time.
    subprocess.run(
        [PY, "-m", "compileall", "-q", str(Path(__file__).resolve().parent.parent / "supervisor")], check=True
    )

    start = bench_start(runs)
    floor = start["python floor (import asyncio, uvloop)"]
    print_table(
        "start + exit of `INIT /bin/true` (ms, median)",
        ["init", "ms", "x python floor"],
        [[k, f"{v:.1f}", f"{v / floor:.2f}"] for k, v in start.items()],
    )

    rss = bench_rss()
    print_table(
        "resident memory while supervising (MB)",
        ["init", "VmRSS MB"],
        [[k, f"{v:.1f}"] for k, v in rss.items()],
    )

    latency = {"subreaper": bench_term_latency(runs, as_pid1=False)}
    if os.geteuid() == 0:
        latency["pid1"] = bench_term_latency(runs, as_pid1=True)
    print_table(
        "`kill -TERM <init>` -> child's handler (us)",
        ["init", "as", "median", "p10-p90"],
        [
            [k, mode, f"{median(v):.0f}", f"{pct(v, 0.1):.0f}-{pct(v, 0.9):.0f}"]
            for mode, rows in latency.items()
            for k, v in rows.items()
        ],
    )

    reap = bench_reap(max(5, runs // 3))
    print_table(
        "reap 1000 orphans as PID 1 (ms)",
        ["init", "median", "min-max", "runs"],
        [
            [k, f"{median(v):.1f}", f"{min(v, default=0):.1f}-{max(v, default=0):.1f}", len(v)]
            for k, v in reap.items()
        ],
    )

    exits = bench_exit_after_child(runs)
    print_table(
        "child's death -> init's exit (ms)",
        ["init", "median", "p90"],
        [[k, f"{median(v):.2f}", f"{pct(v, 0.9):.2f}"] for k, v in exits.items()],
    )

    ours = "smsupervise"
    checks = {
        "start+exit <= 1.2x python floor": start[ours] <= 1.2 * floor,
        "RSS <= 30 MB": rss[ours] <= 30,
    }
    if reap.get("tini"):
        checks["reap 1000 <= 1.2x tini"] = median(reap[ours]) <= 1.2 * median(reap["tini"])
    for mode, rows in latency.items():
        if rows.get("tini"):
            checks[f"TERM latency ({mode}) <= 3x tini"] = median(rows[ours]) <= 3 * median(rows["tini"])
        if rows.get(POLLED) and rows.get("smsupervise (socket off)"):
            checks[f"TERM latency ({mode}), status polled 10x/s <= 1.5x socket off"] = median(
                rows[POLLED]
            ) <= 1.5 * median(rows["smsupervise (socket off)"])
    if exits.get(ours):
        checks["exit <= 10 ms after the child"] = median(exits[ours]) <= 10
    print_table("targets", ["target", "met"], [[k, "yes" if v else "NO"] for k, v in checks.items()])
    write_json(
        "pid1",
        {
            "runs": runs,
            "start_ms": start,
            "rss_mb": rss,
            "term_latency_us": latency,
            "reap_1000_ms": reap,
            "exit_after_child_ms": exits,
            "targets": checks,
        },
    )


if __name__ == "__main__":
    main()
