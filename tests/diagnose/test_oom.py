"""OOM attribution on a real memory cgroup, as a subreaper and as PID 1: a process that allocates
past the limit is named as killed by the OOM killer, with its RSS and its rank; a plain ``kill -9``
of the same process, and smsupervise's own SIGKILL at the end of the grace, are never called OOM."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON, Supervised, events, helper, sleep_until, supervisor_argv
from tests.diagnose.conftest import MemoryCgroup
from tests.sagemaker import fixtures

JOB = helper("memory_job.py")
IGNORES_SIGTERM = (
    "import signal,time; signal.signal(15, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"
)


def _train(
    mode: str, memcg: MemoryCgroup, base: Path, job: str, **env: str
) -> subprocess.CompletedProcess[bytes]:
    full_env = {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": f"{PYTHON} {JOB} {job}",
        "SMSUPERVISE_SAMPLE_INTERVAL": env.pop("INTERVAL", "0.1"),
        "SMSUPERVISE_CONTROL_SOCKET": "none",
        **env,
    }
    argv = memcg.enter_argv(supervisor_argv(mode, "train"))
    return subprocess.run(argv, env=full_env, capture_output=True, timeout=120, check=False)


def _named(stream: bytes, name: str) -> list[dict[str, Any]]:
    return [e for e in events(stream) if e["event"] == name]


def _outcome(base: Path) -> tuple[list[str], str]:
    output = base / "output"
    return (output / "failure").read_text().splitlines(), (output / "failure_class").read_text().strip()


def test_the_main_process_past_the_memory_limit_is_named_oom_killed(
    mode: str, memcg: MemoryCgroup, tmp_path: Path
) -> None:
    """A single-process job that allocates past 64 MiB: the OOM killer's SIGKILL is named as such,
    with the process's RSS and the limit; class OutOfMemory everywhere it is reported."""
    base = fixtures.example(tmp_path)
    result = _train(mode, memcg, base, "alloc")
    assert result.returncode == 137, result.stderr.decode()[-2000:]
    assert memcg.oom_kills() == 1
    lines, failure_class = _outcome(base)
    assert lines[0].startswith("The main process (pid "), lines
    assert "was killed by the OOM killer; RSS " in lines[0]
    assert "memory limit 64.0 MiB" in lines[0]
    assert "counted by cgroup v" in lines[0]
    assert failure_class == "OutOfMemory"
    [kill] = _named(result.stderr, "oom_killed")
    assert kill["main"] is True
    assert kill["known_by"] == "its SIGKILL death"
    assert kill["rss"] > 12 << 20  # a sample saw it growing (more than a bare Python holds)
    assert kill["peak_rss"] > 48 << 20  # wait4's ru_maxrss: it got close to the 64 MiB limit
    assert kill["limit"] == 64 << 20
    assert _named(result.stderr, "exiting")[0]["failure_class"] == "OutOfMemory"
    assert _named(result.stderr, "failure_written")[0]["failure_class"] == "OutOfMemory"


def test_a_plain_kill_9_of_the_same_process_is_not_called_oom(
    mode: str, memcg: MemoryCgroup, tmp_path: Path
) -> None:
    """The twin: the same kind of process, SIGKILLed by a plain kill -9 in the same cgroup, is a
    SIGKILL from outside: the counter did not move, no oom_killed event, class Signal."""
    base = fixtures.example(tmp_path)
    result = _train(mode, memcg, base, "selfkill 24")
    assert result.returncode == 137, result.stderr.decode()[-2000:]
    assert memcg.oom_kills() == 0
    lines, failure_class = _outcome(base)
    assert lines[0].startswith("Training was killed by SIGKILL (signal 9, exit 137): not by the OOM killer")
    assert "OOM killer;" not in "\n".join(lines)
    assert failure_class == "Signal"
    assert _named(result.stderr, "oom_killed") == []


def test_the_rank_that_outgrew_the_limit_is_named_with_its_workers(
    mode: str, memcg: MemoryCgroup, tmp_path: Path
) -> None:
    """A torchrun-like launcher with two ranks, each with a worker: rank 1 outgrows the limit and is
    named by its rank, local rank and pid, with its worker's memory; the launcher's exit 1 and
    rank 0's SIGTERM are not mistaken for the OOM kill."""
    base = fixtures.example(tmp_path)
    result = _train(mode, memcg, base, "launcher 1 4")
    assert result.returncode == 1, result.stderr.decode()[-2000:]
    lines, failure_class = _outcome(base)
    assert failure_class == "OutOfMemory"
    [kill] = _named(result.stderr, "oom_killed")
    assert (kill["rank"], kill["local_rank"], kill["pid"], kill["main"]) == (1, 1, kill["rank_pid"], False)
    assert kill["workers"] == 1
    assert kill["workers_rss"] >= 4 << 20
    assert lines[0].startswith(
        f"Rank 1 (algo-1, local rank 1, pid {kill['pid']}) was killed by the OOM killer"
    )
    assert "its 1 child process (DataLoader worker) held" in lines[0]
    assert lines[1] == "Training exited with code 1."


def test_a_dataloader_workers_oom_kill_is_attributed_to_its_rank(
    mode: str, memcg: MemoryCgroup, tmp_path: Path
) -> None:
    """A rank's forked worker outgrows the limit: the failure names the worker and its rank."""
    base = fixtures.example(tmp_path)
    result = _train(mode, memcg, base, "worker-victim")
    assert result.returncode == 1, result.stderr.decode()[-2000:]
    lines, failure_class = _outcome(base)
    assert failure_class == "OutOfMemory"
    [kill] = _named(result.stderr, "oom_killed")
    assert kill["rank"] == 0
    assert kill["rank_pid"] != kill["pid"]
    assert lines[0].startswith(f"A worker of rank 0 (pid {kill['pid']}, python")
    assert f"its rank: algo-1, pid {kill['rank_pid']})" in lines[0]


def test_smsupervises_own_sigkill_at_the_end_of_the_grace_is_not_oom(
    mode: str, memcg: MemoryCgroup, tmp_path: Path
) -> None:
    """The other twin: a job that ignores SIGTERM is SIGKILLed by smsupervise when the grace ends:
    the failure says so, class Stopped, no oom_killed event."""
    base = fixtures.example(tmp_path)
    env = {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": f'{PYTHON} -c "{IGNORES_SIGTERM}"',
        "SMSUPERVISE_SAMPLE_INTERVAL": "0.1",
        "SMSUPERVISE_CONTROL_SOCKET": "none",
        "SMSUPERVISE_GRACE_PERIOD": "0.5",
    }
    run = Supervised(mode, memcg.enter_argv(supervisor_argv(mode, "train")), env=env)
    run.wait_event("child_spawned")
    stdout = run.proc.stdout
    assert stdout is not None
    sleep_until(lambda: b"up" in stdout.readline(), what="the job to ignore SIGTERM")
    code, _, err = run.signal_when(lambda: True, "the job", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM or code == 137, err.decode()[-2000:]
    lines, failure_class = _outcome(base)
    assert "did not exit within the 0.5 s grace period and was SIGKILLed" in lines[0]
    assert failure_class == "Stopped"
    assert _named(err, "oom_killed") == []
    assert memcg.oom_kills() == 0


def test_memory_pressure_is_a_warning_before_the_kill(mode: str, memcg: MemoryCgroup, tmp_path: Path) -> None:
    """A job that holds ~95 % of the limit for 3 s before it outgrows it: memory_pressure comes
    first, with the usage and the limit, then oom_killed."""
    base = fixtures.example(tmp_path)
    result = _train(mode, memcg, base, "plateau 44")
    assert result.returncode == 137, result.stderr.decode()[-2000:]
    names = [e["event"] for e in events(result.stderr)]
    assert names.index("memory_pressure") < names.index("oom_killed")
    [pressure] = _named(result.stderr, "memory_pressure")
    assert pressure["limit"] == 64 << 20
    assert pressure["usage"] >= 0.9 * (64 << 20)


def test_no_memory_pressure_below_the_threshold(mode: str, memcg: MemoryCgroup, tmp_path: Path) -> None:
    """The twin: a job that holds a third of the limit gets no memory_pressure warning."""
    base = fixtures.example(tmp_path)
    result = _train(mode, memcg, base, "selfkill 16")
    assert result.returncode == 137
    assert _named(result.stderr, "memory_pressure") == []


def test_a_child_of_a_single_process_job_is_named_below_the_main_process(
    mode: str, memcg: MemoryCgroup, tmp_path: Path
) -> None:
    """No ranks: the child that outgrew the limit is named by its pid, below the main process,
    which is not blamed (it exited 1 on its own)."""
    base = fixtures.example(tmp_path)
    result = _train(mode, memcg, base, "child-victim")
    assert result.returncode == 1, result.stderr.decode()[-2000:]
    [kill] = _named(result.stderr, "oom_killed")
    assert (kill["main"], kill["rank"]) == (False, None)
    lines, failure_class = _outcome(base)
    assert lines[0].startswith(f"A process below the main process (pid {kill['pid']}, python")
    assert failure_class == "OutOfMemory"


def test_a_real_dataloader_workers_oom_kill_is_attributed_to_its_rank(
    mode: str, big_memcg: MemoryCgroup, tmp_path: Path
) -> None:
    """PyTorch for real: a DataLoader worker outgrows a 1 GiB limit; PyTorch says only that the
    worker "exited unexpectedly"; the failure names the worker, its rank and the OOM killer first."""
    pytest.importorskip("torch", reason="PyTorch is not installed (make torch)")
    base = fixtures.example(tmp_path)
    job = f"env RANK=5 LOCAL_RANK=1 {PYTHON} {helper('torch_oom_job.py')}"
    full_env = {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": job,
        "SMSUPERVISE_SAMPLE_INTERVAL": "0.2",
        "SMSUPERVISE_CONTROL_SOCKET": "none",
    }
    argv = big_memcg.enter_argv(supervisor_argv(mode, "train"))
    result = subprocess.run(argv, env=full_env, capture_output=True, timeout=300, check=False)
    assert result.returncode == 1, result.stderr.decode()[-3000:]
    [kill] = _named(result.stderr, "oom_killed")
    assert (kill["rank"], kill["local_rank"]) == (5, 1)
    assert kill["rank_pid"] != kill["pid"]
    lines, failure_class = _outcome(base)
    assert lines[0].startswith(f"A worker of rank 5 (pid {kill['pid']}, ")
    assert "DataLoader worker (pid" in "\n".join(lines)  # PyTorch's own words follow ours
    assert failure_class == "OutOfMemory"


def test_without_periodic_samples_the_main_process_is_still_named(
    mode: str, memcg: MemoryCgroup, tmp_path: Path
) -> None:
    """--sample-interval 0: no sample saw the job, yet the main process's OOM kill is named, with
    its peak RSS from our own reap (wait4)."""
    base = fixtures.example(tmp_path)
    result = _train(mode, memcg, base, "alloc", INTERVAL="0")
    assert result.returncode == 137, result.stderr.decode()[-2000:]
    [kill] = _named(result.stderr, "oom_killed")
    assert (kill["main"], kill["rss"], kill["known_by"]) == (True, None, "its SIGKILL death")
    assert kill["peak_rss"] > 48 << 20
    lines, failure_class = _outcome(base)
    assert lines[0].startswith("The main process (pid ")
    assert "; peak RSS " in lines[0]
    assert failure_class == "OutOfMemory"
