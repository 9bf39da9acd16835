"""Our config files against the ones the SageMaker SDK's local mode writes for the same estimator."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from smsupervise.local import job as jobs
from smsupervise.local import tree
from tests.conftest import ROOT

SDK_VENV = Path(os.environ.get("SMSUPERVISE_SDK_VENV", ROOT / ".venv-sdk"))
SDK_PYTHON = SDK_VENV / "bin" / "python"
needs_sdk = pytest.mark.skipif(not SDK_PYTHON.exists(), reason="no SageMaker SDK venv: make sdk")


def _service_request(sdk_request: dict[str, Any]) -> dict[str, Any]:
    """The SDK's local request as the service takes it: FileDataSource -> S3DataSource, no DataUri."""
    body = dict(sdk_request)
    channels = []
    for item in body["InputDataConfig"]:
        entry = {k: v for k, v in item.items() if k != "DataUri"}
        if "FileDataSource" in entry["DataSource"]:
            uri = entry["DataSource"]["FileDataSource"]["FileUri"]
            entry["DataSource"] = {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": uri,
                    "S3DataDistributionType": "FullyReplicated",
                }
            }
        channels.append(entry)
    body["InputDataConfig"] = channels
    return body


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


@needs_sdk
@pytest.mark.parametrize("count", [1, 2])
def test_config_files_match_the_sdks_local_mode_field_for_field(tmp_path: Path, count: int) -> None:
    """Every field the SDK writes, we write with the same value (host names aside), plus the service's own."""
    for name in ("train", "val"):
        (tmp_path / "data" / name).mkdir(parents=True)
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
    }
    script = ROOT / "tests" / "local" / "sdk_local_mode.py"
    result = subprocess.run(
        [str(SDK_PYTHON), str(script), str(tmp_path), str(tmp_path / "data"), str(count)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    captured = _json(tmp_path / "captured.json")
    job = jobs.validate(_service_request(captured["request"]), "captured.json")
    rename = {sdk_host: f"algo-{k}" for k, sdk_host in enumerate(captured["hosts"], 1)}
    assert len(rename) == count
    for sdk_host, host in rename.items():
        ours = tmp_path / "ours" / host
        tree.write(job, str(ours), host, "/opt/ml")
        sdk_config, our_config = tmp_path / "sdk" / sdk_host / "input" / "config", ours / "input" / "config"
        assert _json(our_config / "hyperparameters.json") == _json(sdk_config / "hyperparameters.json")
        sdk_resources = _json(sdk_config / "resourceconfig.json")
        sdk_resources["current_host"] = rename[sdk_resources["current_host"]]
        sdk_resources["hosts"] = [rename[h] for h in sdk_resources["hosts"]]
        our_resources = _json(our_config / "resourceconfig.json")
        assert {k: our_resources[k] for k in sdk_resources} == sdk_resources
        assert our_resources["current_group_name"] == "homogeneousCluster"  # the service's fields too
        assert our_resources["instance_groups"] == [
            {
                "instance_group_name": "homogeneousCluster",
                "instance_type": "local",
                "hosts": list(rename.values()),
            }
        ]
        sdk_channels, our_channels = (
            _json(sdk_config / "inputdataconfig.json"),
            _json(our_config / "inputdataconfig.json"),
        )
        assert set(our_channels) == set(sdk_channels) == {"train", "validation"}
        for name, fields in sdk_channels.items():
            assert {k: our_channels[name][k] for k in fields} == fields, name
            assert our_channels[name]["S3DistributionType"] == "FullyReplicated"
            assert our_channels[name]["RecordWrapperType"] == "None"
        assert not (sdk_config / "checkpointconfig.json").exists()  # the SDK refuses checkpoints locally
        assert not (our_config / "checkpointconfig.json").exists()
