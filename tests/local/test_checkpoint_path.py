"""CheckpointConfig.LocalPath is normalised before smsupervise-local checks that it is under /opt/ml:
``..``, ``.``, ``//`` and a trailing ``/`` cannot take it out of the host's tree, and it cannot go
through what the runner links or mounts into the tree (``/opt/ml/input``: the channels, the config)."""

from __future__ import annotations

import copy
import os
import posixpath
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsupervise.local import job as jobs
from smsupervise.local import tree
from tests.local.conftest import request, run

ESCAPES = [
    "/opt/ml/../../tmp/x",
    "/opt/ml/checkpoints/../../../etc",
    "/opt/ml/./../x",
    "//opt/ml/../x",
    "/opt/ml/..",
    "/opt/ml",
    "/opt/ml/",
    "/opt/ml//",
    "/opt/ml/.",
    "/opt/mlx/checkpoints",
    "/opt/ml/input/data/train/ckpt",  # a channel: a symlink (basedir) or a bind mount in the tree
    "/opt/ml/input//data/../data/train",
    "/opt/ml/input",
    "/opt/ml/input/config",
    "opt/ml/checkpoints",
]
ALLOWED = {
    "/opt/ml/checkpoints/": "/opt/ml/checkpoints",
    "/opt/ml//checkpoints": "/opt/ml/checkpoints",
    "/opt/ml/a/./b/": "/opt/ml/a/b",
    "/opt/ml/a/../checkpoints": "/opt/ml/checkpoints",
    "//opt//ml//model//ckpt//": "/opt/ml/model/ckpt",
    "/opt/ml/inputs": "/opt/ml/inputs",
}


def _body(tmp: Path, local: str) -> dict[str, Any]:
    body = copy.deepcopy(request(tmp, "metrics"))
    body["CheckpointConfig"] = {"S3Uri": "s3://bucket/ckpt", "LocalPath": local}
    return body


def _inside(local: str) -> bool:
    """The rule, said independently: the path's real place (``//`` collapsed, ``.`` and ``..``
    resolved) is strictly below /opt/ml and not in /opt/ml/input."""
    parts: list[str] = []
    for part in local.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return local.startswith("/") and parts[:2] == ["opt", "ml"] and len(parts) > 2 and parts[2] != "input"


@pytest.mark.parametrize("local", ESCAPES)
def test_a_local_path_that_leaves_or_reaches_through_the_tree_is_refused(tmp_path: Path, local: str) -> None:
    """Each shape is one problem at CheckpointConfig.LocalPath, with the normalised path named."""
    with pytest.raises(jobs.InvalidRequest) as caught:
        jobs.validate(_body(tmp_path, local), "job.json")
    assert [p.path for p in caught.value.problems] == ["CheckpointConfig.LocalPath"]


@pytest.mark.parametrize(("local", "normal"), ALLOWED.items())
def test_a_local_path_inside_is_kept_in_its_normal_form(tmp_path: Path, local: str, normal: str) -> None:
    """The negative twin: these stay allowed, and the job carries the normalised path."""
    job = jobs.validate(_body(tmp_path, local), "job.json")
    assert job.checkpoint is not None
    assert job.checkpoint.local_path == normal


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(["..", ".", "", "opt", "ml", "input", "data", "ckpt"]), max_size=8))
def test_the_class_every_accepted_path_stays_in_the_tree(tmp_path: Path, parts: list[str]) -> None:
    """Any mix of ``..``, ``.``, empty parts after ``/opt/ml/``: accepted exactly when its real
    place is inside (by the rule said above), and then the host's checkpoint dir is inside its tree."""
    local = "/opt/ml/" + "/".join(parts)
    body = _body(tmp_path, local)
    try:
        job = jobs.validate(body, "job.json")
    except jobs.InvalidRequest:
        assert not _inside(local), local
        return
    assert _inside(local), local
    assert job.checkpoint is not None
    where = tree.checkpoint_local_path(job, "/work/hosts/algo-1/opt_ml")
    assert where is not None
    assert posixpath.normpath(where).startswith("/work/hosts/algo-1/opt_ml/"), (local, where)


def test_an_escaping_local_path_runs_nothing_and_makes_nothing(tmp_path: Path) -> None:
    """The whole runner: ``/opt/ml/../..<tmp>/escaped`` is an invalid request (exit 2); the
    directory it points at is never made."""
    target = tmp_path / "escaped"
    result = run(tmp_path, _body(tmp_path, f"/opt/ml/../..{target}"))
    assert result.returncode == 2, result.stderr
    assert "CheckpointConfig.LocalPath" in result.stderr
    assert not os.path.lexists(target)
