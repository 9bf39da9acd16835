"""decide() is pure and prepare() does the side effects; together they run what decide showed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from smsupervise.core.spawn import StepKind
from smsupervise.errors import ConfigError
from smsupervise.sagemaker import plan
from smsupervise.sagemaker.environment import Machine
from smsupervise.sagemaker.runners import RunnerKind
from smsupervise.settings import Invocation, Settings
from tests.sagemaker.fixtures import build


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its mode and size: any write or chmod changes it."""
    return {
        str(path.relative_to(root)): (path.lstat().st_mode, path.lstat().st_size)
        for path in sorted(root.rglob("*"))
    }


def _invocation(base: Path, mode: str = "train", *args: str) -> Invocation:
    settings = Settings.from_sources({"base_dir": str(base)}, {}, mode)  # type: ignore[arg-type]
    return Invocation(mode, args, settings)  # type: ignore[arg-type]


def _env() -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "TMPDIR": "/tmp"}


@pytest.mark.parametrize(
    ("entry", "source"), [("train.sh", "tar.gz"), ("train.py", "dir"), ("train.py", "tar.gz")]
)
def test_decide_writes_nothing_and_prepare_does_the_rest(tmp_path: Path, entry: str, source: str) -> None:
    """decide() leaves the tree untouched (no unpack, no chmod); prepare() unpacks and, for a shell
    entry point, makes it executable; the steps stay those decide() showed."""
    base = build(tmp_path, hyperparameters={"epochs": "3"}, entry=entry, source=source)
    before = _snapshot(tmp_path)
    decided = plan.decide(_invocation(base), _env(), Machine(4), run_id="t1")
    assert _snapshot(tmp_path) == before
    assert [step.kind for step in decided.steps] == [StepKind.MAIN]
    prepared, notes = plan.prepare(decided)
    assert _snapshot(tmp_path) != before
    assert prepared.steps == decided.steps
    assert [note.event for note in notes] == ["source_ready"]
    executable = os.access(base / "code" / entry, os.X_OK)
    assert executable is entry.endswith(".sh")


def test_the_plan_is_the_same_for_the_same_inputs(tmp_path: Path) -> None:
    """The same invocation, environment, machine and token give the same plan (inspect == train)."""
    base = build(tmp_path, hyperparameters={"lr": "0.1"}, source="tar.gz")
    first = plan.decide(_invocation(base), _env(), Machine(2, num_gpus=1), run_id="same")
    second = plan.decide(_invocation(base), _env(), Machine(2, num_gpus=1), run_id="same")
    assert first == second
    assert first.steps[-1].spec.env["SM_NUM_GPUS"] == "1"
    other = plan.decide(_invocation(base), _env(), Machine(2, num_gpus=0), run_id="same")
    assert other.steps[-1].spec.env["SM_NUM_GPUS"] == "0"


def test_requirements_become_a_preparation_step(tmp_path: Path) -> None:
    """A requirements.txt in the source gives a PREPARE step before the MAIN training step."""
    base = build(tmp_path, hyperparameters={}, source="dir")
    (tmp_path / "src" / "requirements.txt").write_text("")
    decided = plan.decide(_invocation(base), _env(), Machine(1), run_id="t")
    assert [(s.kind, s.label) for s in decided.steps] == [
        (StepKind.PREPARE, "installing requirements.txt"),
        (StepKind.MAIN, "training"),
    ]
    assert decided.runner is not None
    assert decided.runner.kind is RunnerKind.PYTHON


def test_a_missing_entry_point_is_the_same_error_before_and_after_unpacking(tmp_path: Path) -> None:
    """decide() already reports an entry point the archive lacks, with the file and field train uses."""
    base = build(tmp_path, hyperparameters={}, entry="train.py", source="tar.gz")
    hps = base / "input" / "config" / "hyperparameters.json"
    values = json.loads(hps.read_text())
    values["sagemaker_program"] = json.dumps("missing.py")
    hps.write_text(json.dumps(values))
    before = _snapshot(tmp_path)
    with pytest.raises(ConfigError) as raised:
        plan.decide(_invocation(base), _env(), Machine(1), run_id="t")
    assert raised.value.path == str(hps)
    assert raised.value.field == "sagemaker_program"
    assert "'missing.py' is not a file" in raised.value.message()
    assert _snapshot(tmp_path) == before


def test_a_missing_entry_point_named_by_sagemaker_program_blames_the_variable(tmp_path: Path) -> None:
    """SAGEMAKER_PROGRAM (an image's ENV) wins over the hyperparameter, as in the toolkit, so the
    error names the variable, not hyperparameters.json (whose sagemaker_program names a real file)."""
    base = build(tmp_path, hyperparameters={}, entry="train.py", source="tar.gz")
    with pytest.raises(ConfigError) as raised:
        plan.decide(_invocation(base), {**_env(), "SAGEMAKER_PROGRAM": "image.py"}, Machine(1), run_id="t")
    assert (raised.value.path, raised.value.field) == ("the environment", "SAGEMAKER_PROGRAM")
    assert "'image.py' is not a file" in raised.value.message()
    assert "overrides the sagemaker_program hyperparameter" in raised.value.message()


def test_exec_and_serve_plans_have_one_main_step_and_no_outcome_dir(tmp_path: Path) -> None:
    """`--` commands and serve are MAIN steps; they write no outcome files."""
    exec_plan = plan.decide(Invocation("exec", ("true",), Settings.defaults()), _env())
    assert [s.kind for s in exec_plan.steps] == [StepKind.MAIN]
    assert exec_plan.outcome_dir is None
    serve_env = {**_env(), "SMSUPERVISE_SERVE": "python3 -m http.server"}
    serve_plan = plan.decide(Invocation("serve", (), Settings.defaults("serve")), serve_env)
    assert serve_plan.steps[0].label == "serving"
    assert serve_plan.steps[0].spec.argv == ("python3", "-m", "http.server")


def test_the_checkpoint_signal_reaches_only_the_main_step(tmp_path: Path) -> None:
    """--checkpoint-signal names the signal and a per-run ack file in the training step's env only."""
    base = build(tmp_path, hyperparameters={}, source="dir")
    (tmp_path / "src" / "requirements.txt").write_text("")
    settings = Settings.from_sources({"base_dir": str(base), "checkpoint_signal": 10}, {}, "train")
    decided = plan.decide(Invocation("train", (), settings), _env(), Machine(1), run_id="tok")
    install, train = decided.steps
    assert "SMSUPERVISE_CHECKPOINT_DONE" not in install.spec.env
    assert train.spec.env["SMSUPERVISE_CHECKPOINT_SIGNAL"] == "SIGUSR1"
    assert (
        train.spec.env["SMSUPERVISE_CHECKPOINT_DONE"]
        == decided.ack_file
        == "/tmp/smsupervise-tok.checkpoint-done"
    )


def test_no_python_is_needed_for_a_shell_entry_point(tmp_path: Path) -> None:
    """The shell runner runs without any python3 on PATH; the Python runner says what is missing."""
    base = build(tmp_path, hyperparameters={}, entry="train.sh", source="dir")
    empty = {"PATH": str(tmp_path / "nowhere")}
    decided = plan.decide(_invocation(base), empty, Machine(1), run_id="t")
    assert decided.steps[-1].spec.argv[:2] == ("/bin/sh", "-c")
    other = build(tmp_path / "py", hyperparameters={}, entry="train.py", source="dir")
    with pytest.raises(Exception, match="no python3 on PATH"):
        plan.decide(_invocation(other), empty, Machine(1), run_id="t")
