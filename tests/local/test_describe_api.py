"""describe.json is what DescribeTrainingJob returns: the service's defaults filled in, every member
of the output shape in botocore's service model obeyed, and the real SDK's ``Estimator.attach()``
(and a framework estimator's) working from it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from smsupervise.local import apimodel, describe
from smsupervise.local import job as jobs
from tests.local.conftest import channel, described, needs_root, request, run_args, write_request
from tests.local.test_sdk_config import SDK_PYTHON, needs_sdk

pytest.importorskip("botocore", reason="botocore is not installed: pip install -e '.[local]'")

PYTORCH_IMAGE = "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:2.1.0-cpu-py310"


def _sdk_request(tmp: Path, s3: bool = False) -> dict[str, Any]:
    """A request as the SDK's Estimator sends one: no KmsKeyId, no Enable* flags, channels without
    CompressionType or RecordWrapperType (``s3``: its URIs on S3, as the API's patterns want them)."""
    (tmp / "data").mkdir(exist_ok=True)
    uri = "s3://bucket/train" if s3 else str(tmp / "data")
    body = request(tmp, "hosts", InputDataConfig=[channel("train", uri)])
    if s3:
        body["OutputDataConfig"]["S3OutputPath"] = "s3://bucket/out"
    body["AlgorithmSpecification"]["TrainingImage"] = PYTORCH_IMAGE
    hyperparameters = {
        "mode": '"hosts"',
        "sagemaker_region": '"us-west-2"',
        "sagemaker_container_log_level": "20",
    }
    body["HyperParameters"].update(hyperparameters)  # JSON-encoded, every one, as a framework estimator
    return body


def _body(tmp: Path, status: str, model: str | None) -> dict[str, Any]:
    job = jobs.validate(_sdk_request(tmp, s3=True))
    timeline = describe.Timeline()
    for step in ("Starting", "Downloading", "Training"):
        timeline.enter(step)
    failure = "AlgorithmError: algo-1 exited with code 1" if status == "Failed" else None
    return describe.response(job, timeline, status=status, failure=failure, final=[], model_uri=model)


@pytest.mark.parametrize("status", ["InProgress", "Completed", "Failed", "Stopped"])
def test_describe_obeys_the_output_shape_in_every_state(tmp_path: Path, status: str) -> None:
    """Each state's describe.json against DescribeTrainingJob's output shape: no finding, and the
    service's defaults present (what ``Estimator.attach()`` reads by key)."""
    model = "s3://bucket/out/probe-hosts/output/model.tar.gz" if status == "Completed" else None
    body = json.loads(json.dumps(_body(tmp_path, status, model)))
    assert apimodel.check(body, apimodel.output_shape("DescribeTrainingJob")) == []
    assert body["OutputDataConfig"]["KmsKeyId"] == ""
    assert body["OutputDataConfig"]["CompressionType"] == "GZIP"
    assert (body["EnableNetworkIsolation"], body["EnableManagedSpotTraining"]) == (False, False)
    assert body["EnableInterContainerTrafficEncryption"] is False
    train = body["InputDataConfig"][0]
    assert (train["CompressionType"], train["RecordWrapperType"]) == ("None", "None")
    assert body["ModelArtifacts"]["S3ModelArtifacts"] == "s3://bucket/out/probe-hosts/output/model.tar.gz"


def test_what_the_request_said_wins_over_a_default(tmp_path: Path) -> None:
    """The negative twin: values the request gives are echoed, not replaced by the defaults."""
    body = _sdk_request(tmp_path)
    body["OutputDataConfig"]["KmsKeyId"] = "alias/mine"
    body["EnableNetworkIsolation"] = True
    body["InputDataConfig"][0]["RecordWrapperType"] = "RecordIO"
    body["InputDataConfig"][0]["InputMode"] = "Pipe"
    job = jobs.validate(body)
    seen = describe.response(
        job, describe.Timeline(), status="InProgress", failure=None, final=[], model_uri=None
    )
    assert seen["OutputDataConfig"]["KmsKeyId"] == "alias/mine"
    assert seen["EnableNetworkIsolation"] is True
    assert seen["InputDataConfig"][0]["RecordWrapperType"] == "RecordIO"
    assert body["OutputDataConfig"] == {"S3OutputPath": f"file://{tmp_path}/out", "KmsKeyId": "alias/mine"}


def test_the_shape_check_is_not_vacuous() -> None:
    """The checker itself: a missing required member, a wrong type, an unknown member and a value
    outside an enum are each found, with their paths."""
    shape = apimodel.output_shape("DescribeTrainingJob")
    found = apimodel.check(
        {
            "TrainingJobName": "x",
            "TrainingJobStatus": "Running",
            "SecondaryStatus": "Training",
            "StoppingCondition": {"MaxRuntimeInSeconds": "60"},
            "CreationTime": "2026-01-01T00:00:00+00:00",
            "ModelArtifacts": {"S3ModelArtifacts": "s3://b/m.tar.gz", "Extra": 1},
        },
        shape,
    )
    assert {f.path for f in found} == {
        "TrainingJobArn",
        "TrainingJobStatus",
        "StoppingCondition.MaxRuntimeInSeconds",
        "ModelArtifacts.Extra",
    }


@needs_root
@needs_sdk
def test_the_sdks_attach_works_on_a_runs_describe(tmp_path: Path, s3: Any) -> None:
    """A real run's describe.json (its output on S3, the stand-in endpoint: the SDK refuses file://
    outside its local mode), served to the SDK 2.257 through botocore's Stubber (which validates it
    as botocore parses a response): ``Estimator.attach()`` and ``PyTorch.attach()`` read it, and
    ``model_data`` is where the run put the model."""
    s3.put("s3://results/.keep", b"")
    body = _sdk_request(tmp_path)
    body["OutputDataConfig"]["S3OutputPath"] = "s3://results/out"
    result = subprocess.run(
        run_args(tmp_path, body),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, **s3.env},
    )
    assert result.returncode == 0, result.stderr
    path = write_request(tmp_path, described(tmp_path), "describe-copy.json")
    script = Path(__file__).resolve().parent / "sdk_attach.py"
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "HOME": str(tmp_path)}
    done = subprocess.run(
        [str(SDK_PYTHON), str(script), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    model = "s3://results/out/probe-hosts/output/model.tar.gz"
    assert model in s3.keys("results") or "out/probe-hosts/output/model.tar.gz" in s3.keys("results")
    for name in ("Estimator", "PyTorch"):
        assert seen[name].get("error") is None, seen[name]
        assert seen[name]["model_data"] == model
        assert (seen[name]["output_kms_key"], seen[name]["instance_count"], seen[name]["max_run"]) == (
            "",
            1,
            300,
        )
