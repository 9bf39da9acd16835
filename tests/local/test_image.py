"""``--image``: each host as a podman container with the same tree, channels, stop and artifacts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from smsupervise.local import hosts, launch
from smsupervise.local import job as jobs
from smsupervise.local.channels import Bind, Staged
from smsupervise.local.containers import run_argv
from tests.local.conftest import JOBS, described, request, run

IMAGE = os.environ.get("SMSUPERVISE_LOCAL_TEST_IMAGE", "")


def _plan(tmp: Path) -> launch.HostPlan:
    staged = Staged((Bind("/data/train", "input/data/train"),), (), 0)
    env = {"TRAINING_JOB_NAME": "probe-hosts", "TRAINING_JOB_ARN": "arn", "HOME": "/root"}
    return launch.HostPlan(
        hosts.Host("algo-2", 2, None, "127.0.0.1"), str(tmp / "t"), "/opt/ml", staged, (), env
    )


@pytest.mark.skipif(
    shutil.which("podman") is None and shutil.which("docker") is None, reason="no podman/docker"
)
def test_the_container_command_mounts_the_tree_and_channels_read_only(tmp_path: Path) -> None:
    """One container per host: lc-* name, hostname algo-K, /opt/ml, channels :ro, the job's env only."""
    job = jobs.validate(request(tmp_path, "hosts", count=2, Environment={"A": "1"}))
    argv = run_argv(job, "img:1", "lc-x-algo-2", _plan(tmp_path), "lc-x")
    assert argv[1:6] == ["run", "--rm", "--name", "lc-x-algo-2", "--hostname"]
    assert argv[7:11] == ["--network", "lc-x", "--network-alias", "algo-2"]
    assert f"{tmp_path}/t:/opt/ml" in argv
    assert "/data/train:/opt/ml/input/data/train:ro" in argv
    assert {"TRAINING_JOB_NAME=probe-hosts", "TRAINING_JOB_ARN=arn", "A=1"} <= set(argv)
    assert f"{JOBS}:{JOBS}:ro" in argv  # sagemaker_submit_directory, at its own path
    assert "HOME=/root" not in argv  # the machine's environment stays out
    assert argv[-2:] == ["img:1", "train"]


@pytest.mark.skipif(
    not (shutil.which("podman") and IMAGE), reason="needs podman and SMSUPERVISE_LOCAL_TEST_IMAGE"
)
def test_a_job_runs_to_completion_in_podman(tmp_path: Path) -> None:
    """The probe job in an image with smsupervise as ENTRYPOINT: Completed, artifacts as without --image."""
    result = run(tmp_path, request(tmp_path, "metrics"), "--image", IMAGE)
    assert result.returncode == 0, result.stderr
    assert described(tmp_path)["TrainingJobStatus"] == "Completed"
    assert (tmp_path / "out" / "probe-metrics" / "output" / "model.tar.gz").exists()
