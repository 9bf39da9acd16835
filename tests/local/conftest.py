"""Fixtures for smsupervise-local: a request builder, the real CLI, and namespace clean-up."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from smsupervise.local import hosts

JOBS = Path(__file__).resolve().parent / "jobs"
LOCAL = [sys.executable, "-m", "smsupervise.local"]


def netns_prefix() -> str:
    """The prefix of this test process's namespaces (other helpers' lc- namespaces are left alone)."""
    return f"lc-t{os.getpid()}-"


@pytest.fixture(autouse=True)
def _no_leftover_namespaces() -> Iterator[None]:
    """Delete this test's network namespaces afterwards, even when it failed."""
    yield
    if os.geteuid() == 0 and shutil.which("ip"):
        hosts.cleanup(netns_prefix())


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or hosts.isolation() != "root",
    reason="needs root and unshare (PID/mount/net namespaces)",
)


def channel(name: str, uri: str, **extra: Any) -> dict[str, Any]:
    """One InputDataConfig entry."""
    s3 = {
        "S3DataType": "S3Prefix",
        "S3Uri": uri,
        "S3DataDistributionType": extra.pop("distribution", "FullyReplicated"),
    }
    return {"ChannelName": name, "DataSource": {"S3DataSource": s3}, **extra}


def request(tmp: Path, mode: str, *, count: int = 1, **fields: Any) -> dict[str, Any]:
    """A valid CreateTrainingJob request running ``jobs/probe.py --mode MODE`` in script mode."""
    hyperparameters = {
        "mode": mode,
        "sagemaker_program": '"probe.py"',
        "sagemaker_submit_directory": f'"{JOBS}"',
        **fields.pop("hyperparameters", {}),
    }
    body: dict[str, Any] = {
        "TrainingJobName": fields.pop("name", f"probe-{mode}"),
        "AlgorithmSpecification": {"TrainingImage": "local", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/local",
        "HyperParameters": hyperparameters,
        "OutputDataConfig": {"S3OutputPath": f"file://{tmp}/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": count, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 300},
    }
    body.update(fields)
    if not body.get("InputDataConfig"):
        body.pop("InputDataConfig", None)  # the API refuses an empty list (min 1): the SDK leaves it out
    return body


def write_request(tmp: Path, body: dict[str, Any], name: str = "job.json") -> Path:
    """Write the request file."""
    path = tmp / name
    path.write_bytes(orjson.dumps(body))
    return path


def run_args(tmp: Path, body: dict[str, Any], *extra: str, work: str = "work") -> list[str]:
    """The command line that runs ``body`` with its work dir under ``tmp``."""
    path = write_request(tmp, body, f"{work}.json")
    return [*LOCAL, "run", str(path), "--work-dir", str(tmp / work), "--netns-prefix", netns_prefix(), *extra]


def run(tmp: Path, body: dict[str, Any], *extra: str, work: str = "work") -> subprocess.CompletedProcess[str]:
    """Run the request with the real CLI, to its end (at most 90 s)."""
    return subprocess.run(
        run_args(tmp, body, *extra, work=work), capture_output=True, text=True, timeout=90, check=False
    )


def described(tmp: Path, work: str = "work") -> dict[str, Any]:
    """The run's describe.json."""
    return dict(orjson.loads((tmp / work / "describe.json").read_bytes()))


def model_file(tmp: Path, name: str, host: str = "algo-1", work: str = "work") -> dict[str, Any]:
    """A JSON file the probe wrote into a host's /opt/ml/model."""
    return dict(
        orjson.loads((tmp / work / "hosts" / host / "opt_ml" / "model" / f"{name}-{host}.json").read_bytes())
    )
