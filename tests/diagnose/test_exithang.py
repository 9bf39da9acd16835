"""The exit-hang guard, for real, as a subreaper and as PID 1: a launcher's rank 0 ends ("All
done!") while rank 1 never does: after --exit-timeout the job is stopped, an exit_hang event names
what was left, and the outcome is a success (or a failure, class ExitHang, with
--exit-hang-fails); the twin, a rank 1 that ends within the timeout, runs to its end untouched."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import PYTHON, Supervised, events, helper, supervisor_argv
from tests.sagemaker import fixtures

JOB = helper("memory_job.py")


def _train(mode: str, base: Path, job: str, *flags: str) -> subprocess.CompletedProcess[bytes]:
    """smsupervise train; whatever happens, nothing of the job outlives the test."""
    env = {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": f"{PYTHON} {JOB} {job}",
        "SMSUPERVISE_SAMPLE_INTERVAL": "0.1",
        "SMSUPERVISE_CONTROL_SOCKET": "none",
    }
    run = Supervised(mode, supervisor_argv(mode, *flags, "train"), env=env)
    try:
        code, out, err = run.wait(timeout=120)
    finally:
        if run.proc.poll() is None:
            run.kill()
    return subprocess.CompletedProcess(run.proc.args, code, out, err)


def _named(stream: bytes, name: str) -> list[dict[str, Any]]:
    return [e for e in events(stream) if e["event"] == name]


def test_a_launcher_left_hanging_after_rank_0_ended_is_stopped_and_succeeds(
    mode: str, tmp_path: Path
) -> None:
    """Rank 1 sleeps forever after rank 0 ended: exit_hang names rank 1, its stacks are taken, the
    job is stopped; success file, exit 0 (the model is written)."""
    base = fixtures.example(tmp_path)
    result = _train(mode, base, "hang 0", "--exit-timeout", "1")
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    [started] = _named(result.stderr, "exit_clock_started")
    assert started["why"].startswith("rank 0 (pid ")
    [hang] = _named(result.stderr, "exit_hang")
    assert 1 in [proc["rank"] for proc in hang["remaining"]]
    assert 0 not in [proc["rank"] for proc in hang["remaining"]]
    assert _named(result.stderr, "exit_hang_stacks")
    assert (base / "output" / "success").exists()
    assert not (base / "output" / "failure").exists()
    assert "failure_class" not in _named(result.stderr, "exiting")[0]


def test_with_exit_hang_fails_the_hang_is_a_failure_of_class_exithang(mode: str, tmp_path: Path) -> None:
    """The option: the same hang fails, its first line says what ended and what did not."""
    base = fixtures.example(tmp_path)
    result = _train(mode, base, "hang 0", "--exit-timeout", "1", "--exit-hang-fails")
    assert result.returncode != 0
    first = (base / "output" / "failure").read_text().splitlines()[0]
    assert first.startswith("Exit hang: rank 0 (pid ")
    assert "the job's main process still ran 1 s later; Stopped by ExitHang after" in first
    assert (base / "output" / "failure_class").read_text() == "ExitHang\n"


def test_a_rank_that_ends_within_the_exit_timeout_is_left_alone(mode: str, tmp_path: Path) -> None:
    """The twin: rank 1 ends 1 s after rank 0, within --exit-timeout 30: no exit_hang, success."""
    base = fixtures.example(tmp_path)
    result = _train(mode, base, "hang 1", "--exit-timeout", "30")
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert _named(result.stderr, "exit_hang") == []
    assert (base / "output" / "success").exists()
