"""Pipe-mode relay throughput: producer -> FIFO -> relay -> consumer, beside baselines in the same run.

Cases (each >= 4 GiB a run, 1 MiB pipes everywhere, median of --runs interleaved round-robin so the
VM's slow spells hit every case alike, after one warm-up round):

* ``none``: producer -> FIFO -> consumer (no relay);
* ``c-splice``: producer -> FIFO -> C blocking splice relay -> FIFO -> consumer (the target's baseline);
* ``cat``: producer -> FIFO -> cat -> FIFO -> consumer (a copying relay);
* ``smsupervise``: producer -> ``<base>/input/data/train_0`` -> ``smsupervise --pipe-relay train``
  -> its FIFO -> consumer, the consumer being the training job smsupervise runs.

Producer and consumer are C (``benchmarks/c/pipeprod.c``, ``pipecons.c``): ``write()`` / ``read()``
of 1 MiB, as the SageMaker agent and a large-buffer reader do. Elapsed is from the producer's
``open()`` returning to the consumer's EOF (both CLOCK_MONOTONIC). Relay CPU is the relay process's
user+system time: from ``wait4`` for C and cat; for smsupervise its own (the ``exiting`` event, so
the consumer it runs is not counted), which includes Python's start-up, and separately the relay
thread's CPU for the epoch (``pipe_epoch_done``).

Targets (issue 6): smsupervise >= 0.95x the C splice relay, >= 1.0x no relay, <= 0.08 CPU-s per GB.

    python -m benchmarks.pipe [--runs 5] [--gib 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, StatusPoller, build_c, median, print_table, write_json

POLLED = "smsupervise (socket on, status 10x/s)"
CASES = ("none", "c-splice", "cat", "smsupervise", POLLED)


def _stamp(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


def _cpu(rusage: Any) -> float:
    return float(rusage.ru_utime + rusage.ru_stime)


def _start_smsupervise(
    work: Path, tools: dict[str, str], cons_stamp: Path, socket: str = "none"
) -> tuple[subprocess.Popen[bytes], Path]:
    """smsupervise --pipe-relay train over an /opt/ml tree whose train channel is in Pipe mode."""
    base = work / "ml"
    (base / "input" / "config").mkdir(parents=True, exist_ok=True)
    (base / "input" / "data").mkdir(parents=True, exist_ok=True)
    (base / "input" / "config" / "inputdataconfig.json").write_text(
        '{"train": {"TrainingInputMode": "Pipe"}}'
    )
    upstream = base / "input" / "data" / "train_0"
    os.mkfifo(upstream)
    env = {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": f"sh -c 'exec {tools['pipecons']} \"$SM_CHANNEL_TRAIN\"_0 {cons_stamp}'",
    }
    argv = [
        sys.executable,
        "-m",
        "smsupervise",
        "--pipe-relay",
        "--pipe-relay-dir",
        str(work / "relay"),
        "--control-socket",
        socket,
        "train",
    ]
    relay = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return relay, upstream


def _relay_cpu(case: str, relay: subprocess.Popen[bytes] | None) -> tuple[float | None, float | None]:
    """The relay's CPU seconds once it has ended: whole process, and (smsupervise) the relay loop."""
    if relay is None:
        return None, None
    if not case.startswith("smsupervise"):
        _, status, usage = os.wait4(relay.pid, 0)
        relay.returncode = os.waitstatus_to_exitcode(status)
        return _cpu(usage), None
    whole = loop = None
    _, err = relay.communicate(timeout=300)
    for line in err.splitlines():
        record = json.loads(line)
        if record.get("event") == "exiting":
            whole = float(record["cpu_s"])  # smsupervise's own, not the consumer it ran
        if record.get("event") == "pipe_epoch_done":
            loop = float(record["cpu_s"])
    return whole, loop


def run_case(case: str, nbytes: int, tools: dict[str, str], work: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    prod_stamp, cons_stamp = work / "prod.stamp", work / "cons.stamp"
    procs: list[subprocess.Popen[bytes]] = []
    relay: subprocess.Popen[bytes] | None = None
    socket = str(work / "c.sock") if case == POLLED else "none"
    if case.startswith("smsupervise"):
        relay, producer_target = _start_smsupervise(work, tools, cons_stamp, socket)
    else:
        upstream = work / "up"
        os.mkfifo(upstream)
        producer_target = upstream
        if case == "none":
            procs.append(subprocess.Popen([tools["pipecons"], str(upstream), str(cons_stamp)]))
        else:
            down = work / "down"
            os.mkfifo(down)
            procs.append(subprocess.Popen([tools["pipecons"], str(down), str(cons_stamp)]))
            if case == "c-splice":
                relay = subprocess.Popen([tools["csplice"], str(upstream), str(down)])
            else:
                relay = subprocess.Popen(["sh", "-c", f"exec cat {upstream} > {down}"])
    producer = subprocess.Popen([tools["pipeprod"], str(producer_target), str(nbytes), str(prod_stamp)])
    with StatusPoller(socket) if case == POLLED else contextlib.nullcontext():
        _, status, _ = os.wait4(producer.pid, 0)
    producer.returncode = os.waitstatus_to_exitcode(status)
    relay_cpu, loop_cpu = _relay_cpu(case, relay)
    for proc in procs:
        proc.wait(timeout=300)
    got, end_ns = _stamp(cons_stamp)
    (start_ns,) = _stamp(prod_stamp)
    if got != nbytes:
        raise RuntimeError(f"{case}: consumer got {got} bytes of {nbytes}")
    seconds = (end_ns - start_ns) / 1e9
    gb = nbytes / 1e9
    return {
        "case": case,
        "seconds": seconds,
        "gb_per_s": gb / seconds,
        "relay_cpu_s_per_gb": None if relay_cpu is None else relay_cpu / gb,
        "relay_loop_cpu_s_per_gb": None if loop_cpu is None else loop_cpu / gb,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gib", type=float, default=4.0)
    args = parser.parse_args()
    tools = {name: build_c(name) for name in ("pipeprod", "pipecons", "csplice")}
    if tools["pipeprod"] is None or tools["pipecons"] is None:
        print("note: no C compiler: the producer and consumer are C; nothing to measure", file=sys.stderr)
        return 0
    cases = [c for c in CASES if c != "c-splice" or tools["csplice"] is not None]
    if "c-splice" not in cases:
        print("note: no C compiler: the C splice relay baseline is skipped", file=sys.stderr)
    nbytes = int(args.gib * (1 << 30))
    samples: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory(prefix="smsupervise-pipe-bench-") as tmp:
        for round_index in range(args.runs + 1):  # round 0 is the warm-up
            for case in cases:
                result = run_case(
                    case, nbytes, tools, Path(tmp) / "".join(c if c.isalnum() else "-" for c in case)
                )  # type: ignore[arg-type]
                if round_index:
                    samples[case].append(result)
            time.sleep(0.2)
    summary = {}
    for case in cases:
        rows = samples[case]
        summary[case] = {
            "gb_per_s": median([r["gb_per_s"] for r in rows]),
            "gb_per_s_min": min(r["gb_per_s"] for r in rows),
            "gb_per_s_max": max(r["gb_per_s"] for r in rows),
            "relay_cpu_s_per_gb": median(
                [r["relay_cpu_s_per_gb"] for r in rows if r["relay_cpu_s_per_gb"] is not None]
            ),
            "relay_loop_cpu_s_per_gb": median(
                [r["relay_loop_cpu_s_per_gb"] for r in rows if r["relay_loop_cpu_s_per_gb"] is not None]
            ),
        }
    ours = summary["smsupervise"]["gb_per_s"]
    rows_out = []
    for case in cases:
        s = summary[case]
        rows_out.append(
            [
                case,
                f"{s['gb_per_s']:.2f}",
                f"{s['gb_per_s_min']:.2f}-{s['gb_per_s_max']:.2f}",
                "-"
                if s["relay_cpu_s_per_gb"] != s["relay_cpu_s_per_gb"]
                else f"{s['relay_cpu_s_per_gb']:.3f}",
                "-"
                if s["relay_loop_cpu_s_per_gb"] != s["relay_loop_cpu_s_per_gb"]
                else f"{s['relay_loop_cpu_s_per_gb']:.3f}",
                f"{ours / s['gb_per_s']:.2f}x",
            ]
        )
    print_table(
        f"Pipe-mode relay, {args.gib:g} GiB a run, median of {args.runs} (GB = 1e9 B)",
        ["case", "GB/s", "min-max", "relay CPU s/GB", "relay loop CPU s/GB", "smsupervise vs this"],
        rows_out,
    )
    targets = {
        "vs_c_splice": (ours / summary["c-splice"]["gb_per_s"]) if "c-splice" in summary else None,
        "vs_no_relay": ours / summary["none"]["gb_per_s"],
        "cpu_s_per_gb": summary["smsupervise"]["relay_cpu_s_per_gb"],
    }
    print(
        f"\ntargets: vs C splice {targets['vs_c_splice'] or float('nan'):.2f}x (>= 0.95), "
        f"vs no relay {targets['vs_no_relay']:.2f}x (>= 1.0), "
        f"CPU {targets['cpu_s_per_gb']:.3f} s/GB (<= 0.08)"
    )
    write_json(
        "pipe",
        {
            "gib_per_run": args.gib,
            "runs": args.runs,
            "summary": summary,
            "targets": targets,
            "samples": samples,
            "root": str(ROOT),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
