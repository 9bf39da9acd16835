"""Cluster benchmark on 2 namespaced hosts (root, PyTorch CPU, gloo): smsupervise against the real
sagemaker-training 5.1.4 (its TorchDistributed runner, as the PyTorch toolkit starts it), in one run.

    python -m benchmarks.cluster [--runs N] [--gloo-timeout SECONDS]

* start: from starting both hosts to every rank's first training step;
* fail: rank 1 (on algo-2) raises before joining the process group; from that moment to the last
  host's exit. Without fail-fast (the toolkit) algo-1 waits for the gloo timeout.

Prints a table and writes benchmarks/results/cluster.json. The hosts are tests/distributed/hosts.py's.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tempfile
import time
from pathlib import Path

from tests.distributed import hosts, jobs

from benchmarks.common import median, print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
TOOLKIT = ROOT / ".venv-toolkit"
FIRST_STEP = re.compile(rb"first step \d+ at ([\d.]+)")
FAILING = re.compile(rb"failing at ([\d.]+)")


def _argv(system: str) -> list[str]:
    if system == "toolkit":
        return [
            str(TOOLKIT / "bin" / "python"),
            str(ROOT / "tests" / "distributed" / "toolkit_driver.py"),
            "torchrun",
        ]
    return [sys.executable, "-m", "smsupervise", "train"]


def _env(system: str) -> dict[str, str]:
    env = jobs.environment()
    if system == "toolkit":
        env["PATH"] = f"{TOOLKIT / 'bin'}:{env['PATH']}"  # torchrun itself comes from the test venv
    return env


def run_once(system: str, hyperparameters: dict[str, object], root: Path) -> dict[str, float]:
    """One job on a fresh pair of hosts: wall-clock times of start, first steps, failure, exits."""
    cluster = hosts.Cluster(2, root)
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
            time.sleep(0.01)
        output = b"".join((root / f"{h}.{s}").read_bytes() for h in cluster.names for s in ("out", "err"))
    finally:
        cluster.close()
    firsts = [float(m) for m in FIRST_STEP.findall(output)]
    failing = [float(m) for m in FAILING.findall(output)]
    return {
        "started": started,
        "first_steps": len(firsts),
        "all_first_step_s": max(firsts) - started if firsts else float("nan"),
        "fail_to_last_exit_s": max(exits.values()) - failing[0] if failing and exits else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gloo-timeout", type=float, default=30.0)
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
    samples: dict[str, dict[str, list[float]]] = {
        s: {"start": [], "fail": []} for s in ("smsupervise", "toolkit")
    }
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        for index in range(args.runs):  # interleaved: a slow spell of the shared VM hits both
            for system in samples:
                started = run_once(system, start_job, Path(tmp) / f"{system}-start-{index}")
                samples[system]["start"].append(started["all_first_step_s"])
                failed = run_once(system, fail_job, Path(tmp) / f"{system}-fail-{index}")
                samples[system]["fail"].append(failed["fail_to_last_exit_s"])
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
    print_table(
        f"2 hosts, 1 rank each, gloo timeout {args.gloo_timeout:g} s, median of {args.runs}", header, rows
    )
    checks = {"failure -> last exit <= 5 s (smsupervise)": median(samples["smsupervise"]["fail"]) <= 5}
    print_table("targets", ["target", "met"], [[k, "yes" if v else "NO"] for k, v in checks.items()])
    write_json(
        "cluster",
        {"runs": args.runs, "gloo_timeout_s": args.gloo_timeout, "samples": samples, "targets": checks},
    )


if __name__ == "__main__":
    main()
