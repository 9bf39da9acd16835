"""The platform's stop: MaxRuntimeInSeconds, a stop request, SIGTERM then SIGKILL, checkpoint and resume."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import sleep_until
from tests.local.conftest import described, model_file, needs_root, request, run, run_args


def _statuses(body: dict[str, object]) -> list[str]:
    return [t["Status"] for t in body["SecondaryStatusTransitions"]]  # type: ignore[attr-defined, index]


def _lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


@needs_root
def test_max_runtime_stops_the_job_which_checkpoints_and_a_second_run_resumes(tmp_path: Path) -> None:
    """MaxRuntimeExceeded: SIGTERM, the last checkpoint is mirrored out; the next run resumes from it."""
    checkpoints = tmp_path / "checkpoints"
    config = {"S3Uri": f"file://{checkpoints}", "LocalPath": "/opt/ml/checkpoints"}
    slow = request(
        tmp_path,
        "steps",
        hyperparameters={"steps": "100000", "step-seconds": "0.02"},
        CheckpointConfig=config,
        StoppingCondition={"MaxRuntimeInSeconds": 8},  # room for a loaded machine's start-ups
    )
    result = run(tmp_path, slow, "--kill-after", "20")
    assert result.returncode == 3, result.stderr
    first = described(tmp_path)
    assert (first["TrainingJobStatus"], first["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert _statuses(first) == [
        "Starting",
        "Downloading",
        "Training",
        "Stopping",
        "Uploading",
        "MaxRuntimeExceeded",
    ]
    assert "FailureReason" not in first
    saved = sorted(p.name for p in checkpoints.iterdir())
    assert len(saved) == 2, saved  # the job keeps two: its deletions were mirrored too
    last = orjson.loads((checkpoints / saved[-1]).read_bytes())["step"]
    assert (tmp_path / "out" / "probe-steps" / "output" / "model.tar.gz").exists()  # a stop still uploads

    finish = request(tmp_path, "steps", hyperparameters={"steps": str(last + 4)}, CheckpointConfig=config)
    result = run(tmp_path, finish, work="resume")
    assert result.returncode == 0, result.stderr
    assert model_file(tmp_path, "done", work="resume") == {"first_step": last + 1, "last_step": last + 3}
    assert described(tmp_path, "resume")["TrainingJobStatus"] == "Completed"


@needs_root
def test_a_job_that_ignores_sigterm_is_sigkilled_after_the_kill_delay(tmp_path: Path) -> None:
    """SIGTERM ignored: the stop request's SIGTERM does not end the host, the runner's SIGKILL
    --kill-after seconds later does (its "kill" event; the twin below, a job that honours SIGTERM,
    never needs one); the job is Stopped. Sent once the job said "ready", i.e. ignores SIGTERM."""
    body = request(tmp_path, "wait", hyperparameters={"ignore-term": "1"})
    _out, err, code = _stop_when_ready(tmp_path, body, "--kill-after", "1")
    assert code == 3, err
    assert err.index("StopRequested: SIGTERM") < err.index("the stop's time is up: SIGKILL")
    assert described(tmp_path)["SecondaryStatus"] == "Stopped"


def _stop_when_ready(tmp_path: Path, body: dict[str, Any], *extra: str) -> tuple[str, str, int]:
    """Run ``body``; once its job logged "ready", SIGTERM the runner; its output and exit code."""
    process = subprocess.Popen(
        run_args(tmp_path, body, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    log = tmp_path / "work" / "logs" / "algo-1.jsonl"
    try:
        sleep_until(
            lambda: any(r.get("msg") == "ready" for r in _lines(log)), timeout=60, what="the job's 'ready'"
        )
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    return out, err, process.returncode


@needs_root
def test_sigterm_to_the_runner_is_a_stop_request(tmp_path: Path) -> None:
    """SIGTERM to smsupervise-local (StopTrainingJob): the job gets SIGTERM, exit 3, status Stopped,
    and no SIGKILL was needed (the negative twin of the SIGTERM-ignoring job above)."""
    _out, err, code = _stop_when_ready(tmp_path, request(tmp_path, "wait"))
    assert code == 3, err
    assert "the stop's time is up" not in err
    body = described(tmp_path)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert "Stopping" in _statuses(body)
    events = [r.get("event") for r in _lines(tmp_path / "work" / "logs" / "algo-1.jsonl")]
    assert "signal_received" in events or "stop_requested" in events  # smsupervise (PID 1) got it
