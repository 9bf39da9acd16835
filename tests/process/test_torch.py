"""A real PyTorch loop under smsupervise as PID 1: SIGTERM saves model and optimizer state through
smsupervise.checkpoint, and the resumed run has exactly the losses of an uninterrupted run.

Needs torch in the test interpreter (`make torch`; CPU build); skipped cleanly without it.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON, ROOT, Supervised, event_names, helper, sleep_until, supervisor_argv
from tests.sagemaker import fixtures

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed (make torch)"
)
STEPS = 60


def _env(base: Path, **extra: str) -> dict[str, str]:
    train = f"{PYTHON} {helper('torch_train.py')} {STEPS} {base}/losses.json {base}/progress"
    return {
        "PATH": "/usr/bin:/bin",
        "SAGEMAKER_BASE_DIR": str(base),
        "PYTHONPATH": str(ROOT / "supervisor"),
        "SMSUPERVISE_TRAIN": train,
        **extra,
    }


def _stopped_then_resumed(mode: str, tmp_path: Path, **resume_env: str) -> list[float]:
    """Train, SIGTERM after 15 steps, check the save, resume on the same tree; the final losses."""
    base = fixtures.example(tmp_path / "stopped")
    run = Supervised(mode, supervisor_argv(mode, "train"), env=_env(base))
    progress = base / "progress"
    sleep_until(
        lambda: progress.exists() and int(progress.read_text() or 0) >= 15,
        timeout=60,
        what="15 training steps",
    )
    run.signal(signal.SIGTERM)
    code, out, err = run.wait()
    assert code == 0, err.decode()[-3000:]
    assert b"saved at step" in out
    assert (base / "checkpoints" / "state.pt").exists()
    assert not (base / "losses.json").exists()  # it did stop early
    assert "stop_requested" in event_names(err)
    resumed = subprocess.run(
        supervisor_argv(mode, "train"),
        env=_env(base, **resume_env),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert b"resumed at step" in resumed.stdout
    return list(json.loads((base / "losses.json").read_text()))


def _uninterrupted(mode: str, tmp_path: Path) -> list[float]:
    whole = fixtures.example(tmp_path / "whole")
    result = subprocess.run(
        supervisor_argv(mode, "train"), env=_env(whole), capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    losses = list(json.loads((whole / "losses.json").read_text()))
    assert len(losses) == STEPS
    return losses


def test_sigterm_saves_and_the_resumed_run_has_the_uninterrupted_losses(mode: str, tmp_path: Path) -> None:
    """A PyTorch job stopped by SIGTERM saves through the helper; resumed, its losses equal an
    uninterrupted run's, float for float."""
    assert _stopped_then_resumed(mode, tmp_path) == _uninterrupted(mode, tmp_path)  # float for float


def test_the_comparison_sees_a_resume_that_forgets_the_optimizer(tmp_path: Path) -> None:
    """The negative twin: resuming without Adam's moments gives different losses."""
    assert _stopped_then_resumed("subreaper", tmp_path, FORGET_OPTIMIZER="1") != _uninterrupted(
        "subreaper", tmp_path
    )
