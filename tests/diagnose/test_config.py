"""A job smsupervise cannot start is class Config, in the file and in the event; one that starts
and fails is not."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import events, supervisor_argv
from tests.sagemaker import fixtures


def _train(mode: str, base: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    full = {"PATH": "/usr/bin:/bin", "SAGEMAKER_BASE_DIR": str(base), **env}
    return subprocess.run(
        supervisor_argv(mode, "train"), env=full, capture_output=True, timeout=120, check=False
    )


def test_nothing_to_train_is_class_config(mode: str, tmp_path: Path) -> None:
    """No program to run: exit 2, "Not started", class Config in output/failure_class and the event."""
    base = fixtures.example(tmp_path)
    (base / "input" / "config" / "hyperparameters.json").write_text("{}")
    result = _train(mode, base)
    assert result.returncode == 2
    assert (base / "output" / "failure_class").read_text() == "Config\n"
    [written] = [e for e in events(result.stderr) if e["event"] == "failure_written"]
    assert written["failure_class"] == "Config"


def test_a_program_that_fails_is_not_config(mode: str, tmp_path: Path) -> None:
    """The twin: a program that starts and exits 2 is class ExitCode, though its code is 2 too."""
    base = fixtures.example(tmp_path)
    result = _train(mode, base, SMSUPERVISE_TRAIN="sh -c 'exit 2'", PATH=os.environ["PATH"])
    assert result.returncode == 2
    assert (base / "output" / "failure_class").read_text() == "ExitCode\n"
