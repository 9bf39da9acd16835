"""Cluster benchmark on 2 namespaced hosts (root, PyTorch CPU, gloo): smsupervise against the real
sagemaker-training 5.1.4 (its TorchDistributed runner, as the PyTorch toolkit starts it), in one run.

    python -m benchmarks.cluster [--runs N] [--gloo-timeout SECONDS] [--only start|fail]
                                 [--systems smsupervise,toolkit] [--baseline SUPERVISOR_DIR]

``--baseline`` adds a system "baseline": smsupervise from another checkout's ``supervisor/``
directory (e.g. ``git worktree add /tmp/base <commit>``: /tmp/base/supervisor), run in the same
run, interleaved, for a before/after comparison.

* start: from starting both hosts to every rank's first training step;
* fail: rank 1 (on algo-2) raises before joining the process group; from that moment to the last
  host's exit. Without fail-fast (the toolkit) algo-1 waits for the gloo timeout. Each failure is
  also cut into stages (wall clock, one machine): the rank's exit (a pidfd on it), torchrun noticing
  it (its own log line), the failed host's launcher exit and verdict, the peer's ``peer_failed``, the
  peer's stop signal, its rank's exit, its torchrun noticing, its launcher's exit, the last exit.

Prints a table and writes benchmarks/results/cluster.json. The hosts are tests/distributed/hosts.py's.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import importlib.util
import json
import os
import re
import select
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.distributed import hosts, jobs

from benchmarks.common import median, print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
TOOLKIT = ROOT / ".venv-toolkit"
FIRST_STEP = re.compile(rb"first step \d+ at ([\d.]+)")
FAILING = re.compile(rb"failing at ([\d.]+)")
# torchrun's own log line for a rank that ended (glog format, this machine's clock, UTC)
NOTICED = re.compile(rb"E(\d\d)(\d\d) (\d\d):(\d\d):([\d.]+) \d+ \S+\] failed \(exitcode")
STAGES = [  # (name, host, what) in the order a failure goes through them
    ("rank exits", "algo-2", "rank_exit"),
    ("torchrun notices", "algo-2", "noticed"),
    ("smsupervise tells the peers (rank_failed)", "algo-2", "rank_failed"),
    ("launcher exits", "algo-2", "child_exited"),
    ("peer gets the verdict", "algo-1", "peer_failed"),
    ("peer signals its ranks", "algo-1", "signal_forwarded"),
    ("peer's rank exits", "algo-1", "rank_exit"),
    ("peer's torchrun notices", "algo-1", "noticed"),
    ("peer's launcher exits", "algo-1", "child_exited"),
    ("last host exits", "", "last_exit"),
]


def _argv(system: str) -> list[str]:
    if system == "toolkit":
        return [
            str(TOOLKIT / "bin" / "python"),
            str(ROOT / "tests" / "distributed" / "toolkit_driver.py"),
            "torchrun",
        ]
    return [sys.executable, "-m", "smsupervise", "train"]


BASELINE: list[str] = []  # --baseline: the other checkout's supervisor/ directory


def _env(system: str) -> dict[str, str]:
    env = jobs.environment()
    if system == "baseline":
        env["PYTHONPATH"] = BASELINE[0]
    if system == "toolkit":
        env["PATH"] = f"{TOOLKIT / 'bin'}:{env['PATH']}"  # torchrun itself comes from the test venv
    return env


class RankWatch:
    """Finds each host's rank (a ``train.py`` process with ``RANK`` in its environment) and notes
    when it exits, through a pidfd (the ranks are torchrun's children, not ours)."""

    def __init__(self, ranks: dict[int, str]) -> None:
        self.wanted = dict(ranks)  # RANK -> host
        self.fds: dict[int, str] = {}  # pidfd -> host
        self.exits: dict[str, float] = {}
        self.poller = select.poll()

    def look(self) -> None:
        if not self.wanted:
            return
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                if b"train.py" not in Path(f"/proc/{entry}/cmdline").read_bytes():
                    continue
                env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                rank = next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None)
                if rank in self.wanted:
                    fd = os.pidfd_open(int(entry))
                    self.fds[fd] = self.wanted.pop(rank)
                    self.poller.register(fd, select.POLLIN)

    def wait(self, seconds: float) -> None:
        for fd, _ in self.poller.poll(seconds * 1000):
            self.exits[self.fds[fd]] = time.time()
            self.poller.unregister(fd)
            os.close(fd)

    def close(self) -> None:
        for fd in list(self.fds):
            with contextlib.suppress(OSError):
                os.close(fd)


def _events(text: bytes) -> dict[str, float]:
    """The first time of each of our events in one host's stderr."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(b"{") and b'"logger":"smsupervise"' in line:
            event = json.loads(line)
            found.setdefault(event["event"], _epoch(event["ts"]))
    return found


def _epoch(ts: str) -> float:
    whole, ms = ts.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000


def _noticed(text: bytes, year: int) -> float | None:
    match = NOTICED.search(text)
    if match is None:
        return None
    month, day, hour, minute, second = match.groups()
    whole = calendar.timegm((year, int(month), int(day), int(hour), int(minute), 0, 0, 0, 0))
    return whole + float(second)


def run_once(system: str, hyperparameters: dict[str, object], root: Path) -> dict[str, Any]:
    """One job on a fresh pair of hosts: wall-clock times of start, first steps, failure, exits,
    and for a failing job the stages in between (seconds after the rank's failure)."""
    cluster = hosts.Cluster(2, root)
    watch = RankWatch({0: "algo-1", 1: "algo-2"} if "fail-rank" in hyperparameters else {})
    try:
        jobs.write_job(cluster, hyperparameters)
        started = time.time()
        procs = {}
        for host in cluster.names:
            with (root / f"{host}.out").open("wb") as out, (root / f"{host}.err").open("wb") as err:
                procs[host] = cluster.popen(host, _argv(system), env=_env(system), stdout=out, stderr=err)
        exits: dict[str, float] = {}
        deadline = started + 300
        while len(exits) < len(procs) and time.time() < deadline:
            for host, proc in procs.items():
                if host not in exits and proc.poll() is not None:
                    exits[host] = time.time()
            watch.look()
            watch.wait(0.01)
        logs = {h: {s: (root / f"{h}.{s}").read_bytes() for s in ("out", "err")} for h in cluster.names}
    finally:
        watch.close()
        cluster.close()
    output = b"".join(b"".join(streams.values()) for streams in logs.values())
    firsts = [float(m) for m in FIRST_STEP.findall(output)]
    failing = [float(m) for m in FAILING.findall(output)]
    result: dict[str, Any] = {
        "started": started,
        "first_steps": len(firsts),
        "all_first_step_s": max(firsts) - started if firsts else float("nan"),
        "fail_to_last_exit_s": max(exits.values()) - failing[0] if failing and exits else float("nan"),
    }
    if failing and exits:
        year = time.gmtime(started).tm_year
        facts = {
            host: {
                **_events(logs[host]["err"]),
                "rank_exit": watch.exits.get(host),
                "noticed": _noticed(logs[host]["err"] + logs[host]["out"], year),
            }
            for host in cluster.names
        }
        stages: dict[str, float | None] = {}
        for name, host, what in STAGES:
            at = max(exits.values()) if what == "last_exit" else facts[host].get(what)
            stages[name] = None if at is None else round(at - failing[0], 3)
        result["stages"] = stages
    return result


def _stage_rows(stages: dict[str, list[dict[str, float | None]]]) -> list[list[str]]:
    """One row per stage: its median time after the rank's failure, per system ('-': not seen)."""
    rows = []
    for name, _, _ in STAGES:
        row = [name]
        for runs in stages.values():
            seen = [float(v) for r in runs if (v := r.get(name)) is not None]
            row.append(f"{median(seen):.2f}" if seen else "-")
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gloo-timeout", type=float, default=30.0)
    parser.add_argument("--only", choices=("start", "fail"), help="measure only this")
    parser.add_argument("--systems", default="smsupervise,toolkit", help="comma-separated")
    parser.add_argument("--baseline", help="another checkout's supervisor/ directory, run as 'baseline'")
    args = parser.parse_args()
    problem = hosts.problem() or (
        None if importlib.util.find_spec("torch") else "PyTorch is not installed (make torch)"
    )
    if problem or not (TOOLKIT / "bin" / "train").exists():
        print(f"benchmarks.cluster skipped: {problem or 'no .venv-toolkit (make toolkit)'}", file=sys.stderr)
        return
    base = {"sagemaker_torch_distributed_enabled": True, "sagemaker_mpi_num_of_processes_per_host": 1}
    start_job = {**base, "steps": 5}
    fail_job = {**base, "fail-rank": 1, "fail-step": 0, "timeout": args.gloo_timeout}
    systems = args.systems.split(",")
    if args.baseline:
        BASELINE.append(str(Path(args.baseline).resolve()))
        systems.append("baseline")
    samples: dict[str, dict[str, list[float]]] = {s: {"start": [], "fail": []} for s in systems}
    stages: dict[str, list[dict[str, float | None]]] = {s: [] for s in systems}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        for index in range(args.runs):  # interleaved: a slow spell of the shared VM hits both
            for system in systems:
                if args.only != "fail":
                    started = run_once(system, start_job, Path(tmp) / f"{system}-start-{index}")
                    samples[system]["start"].append(started["all_first_step_s"])
                if args.only != "start":
                    failed = run_once(system, fail_job, Path(tmp) / f"{system}-fail-{index}")
                    samples[system]["fail"].append(failed["fail_to_last_exit_s"])
                    stages[system].append(failed.get("stages", {}))
    rows = [
        [
            system,
            f"{median(s['start']):.2f}",
            f"{median(s['fail']):.2f}",
            ", ".join(f"{v:.2f}" for v in s["fail"]),
        ]
        for system, s in samples.items()
    ]
    header = [
        "system",
        "start -> every rank's first step (s)",
        "rank failure -> last host exit (s)",
        "fail runs",
    ]
    load = os.getloadavg()[0]
    print_table(
        f"2 hosts, 1 rank each, gloo timeout {args.gloo_timeout:g} s, median of {args.runs}, load {load:.1f}",
        header,
        rows,
    )
    if args.only != "start":
        print_table(
            "a failure's stages: seconds after rank 1 (algo-2) raised, median",
            ["stage (host)", *systems],
            _stage_rows(stages),
        )
    checks = {}
    if "smsupervise" in samples and args.only != "start":
        fails = samples["smsupervise"]["fail"]
        checks["failure -> last exit <= 5 s (smsupervise, every run)"] = bool(fails) and max(fails) <= 5
    print_table("targets", ["target", "met"], [[k, "yes" if v else "NO"] for k, v in checks.items()])
    write_json(
        "cluster",
        {
            "runs": args.runs,
            "gloo_timeout_s": args.gloo_timeout,
            "load_1min": load,
            "samples": samples,
            "stages": stages,
            "targets": checks,
        },
    )


if __name__ == "__main__":
    main()
