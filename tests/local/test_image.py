"""``--image``: each host as a podman container with the same tree, channels, stop and artifacts."""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from smsupervise.local import hosts, launch
from smsupervise.local import job as jobs
from smsupervise.local.channels import Bind, Staged
from smsupervise.local.containers import JobNetwork, run_argv
from tests.conftest import sleep_until
from tests.container.podman import Podman
from tests.container.podman import problem as podman_problem
from tests.local.conftest import JOBS, described, model_file, request, run_args

PROBLEM = podman_problem()
in_podman = pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM))
pytestmark = pytest.mark.timeout(900)  # the first container test of a session may build the image


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
    """One container per host: lc-* name, hostname algo-K, its fixed address, the other hosts in its
    /etc/hosts (not itself: podman adds that), /opt/ml, channels :ro, the job's env only."""
    job = jobs.validate(request(tmp_path, "hosts", count=2, Environment={"A": "1"}))
    network = JobNetwork("lc-x", {"algo-1": "10.100.0.10", "algo-2": "10.100.0.11"})
    argv = run_argv(job, "img:1", "lc-x-algo-2", _plan(tmp_path), network)
    assert argv[1:6] == ["run", "--rm", "--name", "lc-x-algo-2", "--hostname"]
    assert argv[7:15] == [
        "--network",
        "lc-x",
        "--network-alias",
        "algo-2",
        "--ip",
        "10.100.0.11",
        "--add-host",
        "algo-1:10.100.0.10",
    ]
    assert f"{tmp_path}/t:/opt/ml" in argv
    assert "/data/train:/opt/ml/input/data/train:ro" in argv
    assert {"TRAINING_JOB_NAME=probe-hosts", "TRAINING_JOB_ARN=arn", "A=1"} <= set(argv)
    assert f"{JOBS}:{JOBS}:ro" in argv  # sagemaker_submit_directory, at its own path
    assert "HOME=/root" not in argv  # the machine's environment stays out
    assert argv[-2:] == ["img:1", "train"]


def _in_podman(podman: Podman, image: str, tmp: Path, body: dict[str, Any]) -> subprocess.Popen[str]:
    """``smsupervise-local run --image`` with the session's podman (its scratch storage through
    ``--engine``, this VM's containers.conf through the environment). The example image sets
    SAGEMAKER_PROGRAM=train.py, which wins over the hyperparameter (as in the toolkit): the request's
    Environment points it at the probe, as a user of that image would."""
    body = {**body, "Environment": {**body.get("Environment", {}), "SAGEMAKER_PROGRAM": "probe.py"}}
    argv = run_args(tmp, body, "--image", image, "--engine", shlex.join(podman.prefix))
    return subprocess.Popen(argv, env=podman.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _out, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, err


@in_podman
def test_one_host_runs_in_the_image_with_smsupervise_as_pid_1(
    podman_session: Podman, image: str, tmp_path: Path
) -> None:
    """The probe job in the example image (smsupervise its ENTRYPOINT, so PID 1, the job its child):
    Completed, host name algo-1, the tree at /opt/ml, and its model packed as without --image."""
    code, err = _finish(_in_podman(podman_session, image, tmp_path, request(tmp_path, "hosts")))
    assert code == 0, err
    assert described(tmp_path)["TrainingJobStatus"] == "Completed"
    seen = model_file(tmp_path, "hosts")
    assert (seen["current_host"], seen["hostname"], seen["base"]) == ("algo-1", "algo-1", "/opt/ml/model")
    assert seen["pid"] == 1  # the job's parent is the container's PID 1: smsupervise
    with tarfile.open(tmp_path / "out" / "probe-hosts" / "output" / "model.tar.gz") as archive:
        assert archive.getnames() == ["hosts-algo-1.json"]
    assert not [n for n in _containers(podman_session) if n.startswith(hosts.PREFIX)]  # --rm: none left


@in_podman
def test_two_hosts_in_the_image_each_see_themselves_and_resolve_the_other(
    podman_session: Podman, image: str, tmp_path: Path
) -> None:
    """Two containers on the job's network: each is its own algo-K (the negative twin of the other)
    and resolves both names to two different addresses; the network is removed at the end."""
    code, err = _finish(_in_podman(podman_session, image, tmp_path, request(tmp_path, "hosts", count=2)))
    assert code == 0, err
    one, two = model_file(tmp_path, "hosts", "algo-1"), model_file(tmp_path, "hosts", "algo-2")
    assert (one["current_host"], one["hostname"], two["current_host"], two["hostname"]) == (
        "algo-1", "algo-1", "algo-2", "algo-2",
    )  # fmt: skip
    for seen in (one, two):
        assert set(seen["addresses"]) == {"algo-1", "algo-2"}
        assert all(seen["addresses"].values()), seen["addresses"]
    assert one["addresses"]["algo-1"] != one["addresses"]["algo-2"]
    assert one["addresses"] == two["addresses"]
    networks = podman_session("network", "ls", "--format", "{{.Name}}").stdout.decode().split()
    assert not [n for n in networks if n.startswith(hosts.PREFIX)]


@in_podman
def test_a_stop_request_reaches_the_container_and_the_job_is_stopped(
    podman_session: Podman, image: str, tmp_path: Path
) -> None:
    """SIGTERM to the runner goes through ``podman kill`` to smsupervise (the container's PID 1):
    the job gets SIGTERM, the runner exits 3 and the status is Stopped."""
    process = _in_podman(podman_session, image, tmp_path, request(tmp_path, "wait"))
    log = tmp_path / "work" / "logs" / "algo-1.jsonl"
    try:
        sleep_until(lambda: b'"ready"' in _read(log), timeout=300, what="the job's 'ready'")
        process.send_signal(signal.SIGTERM)
    finally:
        code, err = _finish(process)
    assert code == 3, err
    body = described(tmp_path)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert b'"signal_received"' in _read(log) or b'"stop_requested"' in _read(log)


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def _containers(podman: Podman) -> list[str]:
    return podman("ps", "--all", "--format", "{{.Names}}").stdout.decode().split()
