"""TensorBoardOutputConfig is honoured: what the job writes under LocalPath (default
/opt/ml/output/tensorboard) is synced while it runs and at the end to
``<S3OutputPath>/<job>/tensorboard-output/``, as the checkpoints are; without the config nothing
is synced, and a LocalPath outside /opt/ml is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from smsupervise.local import job as jobs
from tests.local.conftest import needs_root, request, run

JOB = """
import os
root = "/opt/ml/output/tensorboard"
os.makedirs(os.path.join(root, "train"), exist_ok=True)
with open(os.path.join(root, "train", "events.out.tfevents.1." + os.environ["SM_CURRENT_HOST"]), "wb") as f:
    f.write(b"event bytes " + os.environ["SM_CURRENT_HOST"].encode())
"""


def _body(tmp: Path, **fields: object) -> dict[str, object]:
    code = tmp / "code"
    code.mkdir(exist_ok=True)
    (code / "train.py").write_text(JOB)
    body = request(tmp, "hosts", count=2, **fields)
    body["HyperParameters"].update(
        {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": f'"{code}"'}
    )
    return body


@needs_root
def test_every_hosts_tensorboard_files_reach_the_output_path(tmp_path: Path) -> None:
    """Two hosts each write an event file: both are under <path>/<job>/tensorboard-output/train/,
    byte for byte, and no field_ignored notice names TensorBoardOutputConfig."""
    body = _body(tmp_path, TensorBoardOutputConfig={"S3OutputPath": f"file://{tmp_path}/tb"})
    result = run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    board = tmp_path / "tb" / "probe-hosts" / "tensorboard-output" / "train"
    assert sorted(p.name for p in board.iterdir()) == [
        "events.out.tfevents.1.algo-1",
        "events.out.tfevents.1.algo-2",
    ]
    assert (board / "events.out.tfevents.1.algo-2").read_bytes() == b"event bytes algo-2"
    assert "TensorBoardOutputConfig" not in result.stderr


@needs_root
def test_without_the_config_nothing_is_synced(tmp_path: Path) -> None:
    """The negative twin: the same job without TensorBoardOutputConfig leaves its files in the
    host's tree only."""
    result = run(tmp_path, _body(tmp_path))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "tb").exists()
    assert (tmp_path / "work" / "hosts" / "algo-1" / "opt_ml" / "output" / "tensorboard" / "train").is_dir()


@pytest.mark.parametrize("local", ["/data/tb", "/opt/mlx/tb"])
def test_a_local_path_outside_opt_ml_is_refused(tmp_path: Path, local: str) -> None:
    """A LocalPath the runner cannot map into a host's tree: refused at its path, with a fix."""
    body = _body(tmp_path, TensorBoardOutputConfig={"S3OutputPath": "s3://b/tb", "LocalPath": local})
    with pytest.raises(jobs.InvalidRequest) as caught:
        jobs.validate(body)
    assert [p.path for p in caught.value.problems] == ["TensorBoardOutputConfig.LocalPath"]
    assert caught.value.problems[0].fix
