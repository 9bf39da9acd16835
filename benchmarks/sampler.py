"""The diagnosis sampler's cost: one sample (a /proc walk, the memory cgroup's files, statvfs of the
job's filesystems) with N processes below us, half of them "ranks" (RANK set) with a worker each.

    python -m benchmarks.sampler [--processes 8,64,256] [--samples 200]

Reports, per N, the wall and CPU time of one sample (median and p99 over the samples) and what that
costs at the default 1 s interval (CPU share of one core), beside the number of /proc entries the
walk had to look at (every process this /proc shows: in a container, the container's; here, the
machine's). Writes benchmarks/results/sampler.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import median, pct, print_table, write_json
from smsupervise.diagnose import disks
from smsupervise.diagnose.sampler import Sampler
from smsupervise.streams.events import EventLog

RANK = (
    "import os, sys, time\n"
    "worker = os.fork()\n"
    "if worker == 0:\n"
    "    time.sleep(3600)\n"
    "print(worker, flush=True); time.sleep(3600)\n"
)


def _start(count: int) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """``count`` processes below us: count/4 ranks with a worker each, the rest plain sleeps; and
    the workers' pids."""
    procs: list[subprocess.Popen[bytes]] = []
    ranks = count // 4
    for number in range(ranks):
        env = {**os.environ, "RANK": str(number), "LOCAL_RANK": str(number)}
        procs.append(subprocess.Popen([sys.executable, "-c", RANK], env=env, stdout=subprocess.PIPE))
    procs += [subprocess.Popen(["sleep", "3600"]) for _ in range(count - 2 * ranks)]
    workers = []
    for proc in procs[:ranks]:
        assert proc.stdout is not None
        workers.append(int(proc.stdout.readline()))  # forked its worker
    return procs, workers


def _stop(procs: list[subprocess.Popen[bytes]], workers: list[int]) -> None:
    for pid in workers:  # by pid: they were forked by the ranks, not by us
        os.kill(pid, 9)
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


async def _measure(samples: int) -> dict[str, Any]:
    log = EventLog("json", "error")
    sampler = Sampler(log, 0, disks.job_paths("/opt/ml", None))
    sampler.start()
    walls, cpus = [], []
    for _ in range(samples):
        wall, cpu = time.perf_counter(), time.process_time()
        sampler.sample()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    sampler.close()
    return {
        "job_processes": len(sampler.live),
        "proc_entries": sum(1 for name in os.listdir("/proc") if name.isdigit()),
        "wall_ms_p50": round(1000 * median(walls), 3),
        "wall_ms_p99": round(1000 * pct(walls, 0.99), 3),
        "cpu_ms_p50": round(1000 * median(cpus), 3),
        "cpu_share_at_1s": round(100 * median(cpus), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="8,64,256")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    rows = []
    for count in (int(n) for n in args.processes.split(",")):
        procs, workers = _start(count)
        try:
            result = asyncio.run(_measure(args.samples))
        finally:
            _stop(procs, workers)
        rows.append({"processes": count, **result})
    header = ["processes", "job_processes", "proc_entries", "wall_ms_p50", "wall_ms_p99", "cpu_ms_p50"]
    header.append("cpu_share_at_1s")
    print_table(
        "one sample (percent of one core at --sample-interval 1)",
        header,
        [[row[key] for key in header] for row in rows],
    )
    write_json("sampler", {"rows": rows, "load": os.getloadavg()})


if __name__ == "__main__":
    main()
