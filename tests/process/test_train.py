"""`train` and `serve` end to end, black-box, as a subreaper and as PID 1 of a fresh PID namespace:
the bundled script-mode example job, failure files, bring-your-own-container, configuration errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import PYTHON, event_names, events, supervisor_argv
from tests.sagemaker import fixtures

USER_PYTHON = shutil.which("python3") or PYTHON


def _train(mode: str, base: Path, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    full_env = {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_PYTHON": USER_PYTHON,
        **env,
    }
    return subprocess.run(
        supervisor_argv(mode, *args), env=full_env, capture_output=True, timeout=120, check=False
    )


def _messages(stream: bytes) -> list[str]:
    return [
        record["msg"]
        for line in stream.splitlines()
        if line.startswith(b"{")
        for record in [json.loads(line)]
        if "msg" in record
    ]


def test_script_mode_job_with_hyperparameters_and_two_channels_runs(mode: str, tmp_path: Path) -> None:
    """The example job: hyperparameters become argv, both channels are read, the model and the
    success file are written, the exit code is 0, every line of output is a JSON record."""
    base = fixtures.example(tmp_path)
    result = _train(mode, base, "train")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    spawned = next(e for e in events(result.stderr) if e["event"] == "child_spawned")
    assert spawned["argv"][1:] == [
        "--",
        "train.py",
        "--batch_size",
        "32",
        "--epochs",
        "8",
        "--learning-rate",
        "0.05",
        "--optimizer",
        "sgd",
    ]
    assert spawned["cwd"] == str(base / "code")
    assert 'training on 400 points (100 validation), hosts ["algo-1"]' in " ".join(_messages(result.stderr))
    model = json.loads((base / "model" / "model.json").read_text())
    assert abs(model["w"] - 3.0) < 0.1
    assert abs(model["b"] + 0.5) < 0.1
    assert (base / "output" / "success").exists()
    assert not (base / "output" / "failure").exists()
    assert len(list((base / "checkpoints").glob("ckpt-*.json"))) == 8


def test_failing_job_leaves_a_failure_file_a_person_can_act_on(mode: str, tmp_path: Path) -> None:
    """Exit code 1 (the child's), and a failure file: what happened, then the exception line, then
    the stderr tail; within SageMaker's 1024 characters; no success file."""
    base = fixtures.example(tmp_path, **{"fail-at-epoch": "2"})
    result = _train(mode, base, "train")
    assert result.returncode == 1
    text = (base / "output" / "failure").read_text()
    lines = text.splitlines()
    assert lines[0] == "Training exited with code 1."
    assert lines[1] == "RuntimeError: loss diverged at epoch 2 (--fail-at-epoch 2)"
    assert "Traceback (most recent call last)" in text
    assert len(text) <= 1024
    assert not (base / "output" / "success").exists()
    assert "failure_written" in event_names(result.stderr)


def test_killed_job_names_the_signal_and_a_hint(mode: str, tmp_path: Path) -> None:
    """SIGKILL (what the OOM killer sends) gives 137; a kill -9 is not called OOM (the OOM-kill
    counter did not move: tests/diagnose/test_oom.py has the OOM side)."""
    base = fixtures.example(tmp_path)
    result = _train(mode, base, "train", SMSUPERVISE_TRAIN="sh -c 'kill -KILL $$'")
    assert result.returncode == 137
    first = (base / "output" / "failure").read_text().splitlines()[0]
    assert first.startswith("Training was killed by SIGKILL (signal 9, exit 137): not by the OOM killer (")


def test_the_programs_own_failure_file_wins(mode: str, tmp_path: Path) -> None:
    """A program that writes output/failure itself keeps its words; ours is not written over it."""
    base = fixtures.example(tmp_path)
    failure = base / "output" / "failure"
    result = _train(mode, base, "train", SMSUPERVISE_TRAIN=f"sh -c 'echo my own reason > {failure}; exit 4'")
    assert result.returncode == 4
    assert failure.read_text() == "my own reason\n"
    assert "failure_kept" in event_names(result.stderr)


def test_bring_your_own_container_train_on_path_runs(mode: str, tmp_path: Path) -> None:
    """No script mode: a `train` program on PATH runs, with the SM_* environment, and its code counts."""
    base = fixtures.example(tmp_path)
    hps = base / "input" / "config" / "hyperparameters.json"
    hps.write_text(json.dumps({"epochs": "3"}))  # no sagemaker_program
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "train").write_text(
        '#!/bin/sh\necho "byoc sees $SM_CHANNEL_TRAIN $SM_HP_EPOCHS args=$#"\nexit 3\n'
    )
    (bindir / "train").chmod(0o755)
    result = _train(mode, base, "train", PATH=f"{bindir}:{os.environ['PATH']}")
    assert result.returncode == 3
    assert f"byoc sees {base}/input/data/train 3 args=0" in _messages(result.stdout)
    assert (base / "output" / "failure").read_text().startswith("Training exited with code 3.")


def test_nothing_to_train_exits_2_and_lists_what_was_looked_for(mode: str, tmp_path: Path) -> None:
    """No SMSUPERVISE_TRAIN, no entry point, no `train` on PATH: exit 2, naming all three."""
    base = fixtures.example(tmp_path)
    (base / "input" / "config" / "hyperparameters.json").write_text("{}")
    result = _train(mode, base, "train", PATH="/usr/bin:/bin")
    assert result.returncode == 2
    text = (base / "output" / "failure").read_text()
    assert text.startswith("Not started: ")
    for looked_for in ("SMSUPERVISE_TRAIN", "SAGEMAKER_PROGRAM", "sagemaker_program", "`train` program"):
        assert looked_for in text


def test_malformed_config_stops_before_anything_runs(mode: str, tmp_path: Path) -> None:
    """A bad resourceconfig.json: exit 2, the failure file names the file, the field and the fix, and
    the program never started (its marker file is absent)."""
    base = fixtures.example(tmp_path)
    resource = base / "input" / "config" / "resourceconfig.json"
    resource.write_text(json.dumps({"current_host": "algo-9", "hosts": ["algo-1"]}))
    marker = tmp_path / "ran"
    result = _train(mode, base, "train", SMSUPERVISE_TRAIN=f"touch {marker}")
    assert result.returncode == 2
    text = (base / "output" / "failure").read_text()
    assert str(resource) in text
    assert "current_host" in text
    assert not marker.exists()
    assert "child_spawned" not in event_names(result.stderr)


def test_requirements_failure_is_reported_as_such(mode: str, tmp_path: Path) -> None:
    """requirements.txt is installed with pip before the entry point; when pip fails, training never
    starts and the failure file says it was the install."""
    src = tmp_path / "src"
    shutil.copytree(fixtures.EXAMPLE / "src", src)
    (src / "requirements.txt").write_text("this is not a requirement !!\n")
    base = fixtures.example(tmp_path, sagemaker_submit_directory=json.dumps(str(src)))
    result = _train(mode, base, "train")
    assert result.returncode != 0
    names = event_names(result.stderr)
    steps = [e["step"] for e in events(result.stderr) if e["event"] == "child_spawned"]
    assert steps == ["installing requirements.txt"]
    assert "Installing requirements.txt exited with code" in (base / "output" / "failure").read_text()
    assert not (base / "model" / "model.json").exists()
    assert names[-1] == "exiting"


def test_requirements_install_then_training(mode: str, tmp_path: Path) -> None:
    """The twin: an installable (empty) requirements.txt runs pip, then the entry point."""
    src = tmp_path / "src"
    shutil.copytree(fixtures.EXAMPLE / "src", src)
    (src / "requirements.txt").write_text("# nothing to install\n")
    base = fixtures.example(tmp_path, sagemaker_submit_directory=json.dumps(str(src)))
    result = _train(mode, base, "train")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    steps = [e["step"] for e in events(result.stderr) if e["event"] == "child_spawned"]
    assert steps == ["installing requirements.txt", "training"]


def test_serve_runs_smsupervise_serve_command(mode: str, tmp_path: Path) -> None:
    """serve runs SMSUPERVISE_SERVE with the extra words, and writes no outcome files even when
    the base dir exists and the program fails (endpoints have no failure file)."""
    base = tmp_path / "ml"
    (base / "output").mkdir(parents=True)
    env = {"PATH": os.environ["PATH"], "SAGEMAKER_BASE_DIR": str(base)}
    result = subprocess.run(
        supervisor_argv(mode, "serve", "--port", "8080"),
        capture_output=True,
        timeout=60,
        check=False,
        env={**env, "SMSUPERVISE_SERVE": "echo serving"},
    )
    assert result.returncode == 0
    assert "serving --port 8080" in _messages(result.stdout)
    failing = subprocess.run(
        supervisor_argv(mode, "serve"),
        capture_output=True,
        timeout=60,
        check=False,
        env={**env, "SMSUPERVISE_SERVE": "sh -c 'exit 4'"},
    )
    assert failing.returncode == 4
    assert list((base / "output").iterdir()) == []
    assert "did not start" not in failing.stderr.decode()


def test_outcome_files_left_by_an_earlier_run_are_replaced(mode: str, tmp_path: Path) -> None:
    """Local runs reuse a tree: a failure file from before this run is not "the program's own"."""
    base = fixtures.example(tmp_path)
    stale = base / "output" / "failure"
    stale.write_text("from last week\n")
    result = _train(mode, base, "train")
    assert result.returncode == 0
    assert not stale.exists()
    assert (base / "output" / "success").exists()
    assert "stale_outcome_removed" in event_names(result.stderr)


def test_distributed_runner_flags_are_flagged_not_silently_ignored(mode: str, tmp_path: Path) -> None:
    """sagemaker_parameter_server_enabled=true (TensorFlow's): we say we don't start it, and run the job."""
    base = fixtures.example(tmp_path, sagemaker_parameter_server_enabled="true")
    result = _train(mode, base, "train")
    assert result.returncode == 0
    warned = [e for e in events(result.stderr) if e["event"] == "runner_not_supported"]
    assert warned[0]["flags"] == ["sagemaker_parameter_server_enabled"]
    assert warned[0]["level"] == "warning"
    plain = _train(mode, fixtures.example(tmp_path / "plain"), "train")
    assert "runner_not_supported" not in event_names(plain.stderr)
