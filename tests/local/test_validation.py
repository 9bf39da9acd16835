"""Requests are checked as CreateTrainingJob does: every error names the JSON path, the rule and the fix."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from smsupervise.local import job as jobs
from tests.local.conftest import LOCAL, channel, request, write_request

Mutation = Callable[[dict[str, Any]], None]


def _valid(tmp: Path) -> dict[str, Any]:
    body = request(
        tmp, "metrics", InputDataConfig=[channel("train", "/data"), channel("validation", "/data")]
    )
    body["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "loss", "Regex": "loss=(.*?);"}]
    body["Environment"] = {"A": "1"}
    return body


def _set(path: str, value: Any) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target: Any = body
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is KeyError:
            del target[last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return mutate


CASES: list[tuple[str, Mutation, str, str]] = [
    (
        "41 metrics",
        _set(
            "AlgorithmSpecification/MetricDefinitions", [{"Name": f"m{i}", "Regex": "(x)"} for i in range(41)]
        ),
        "AlgorithmSpecification.MetricDefinitions",
        "more than 40",
    ),
    (
        "a 501-character regex",
        _set("AlgorithmSpecification/MetricDefinitions/0/Regex", "(" + "a" * 499 + ")"),
        "AlgorithmSpecification.MetricDefinitions[0].Regex",
        "more than the 500 allowed",
    ),
    (
        "a regex Python rejects",
        _set("AlgorithmSpecification/MetricDefinitions/0/Regex", "loss=(.*"),
        "AlgorithmSpecification.MetricDefinitions[0].Regex",
        "not a Python regular expression",
    ),
    (
        "a 256-character metric name",
        _set("AlgorithmSpecification/MetricDefinitions/0/Name", "n" * 256),
        "AlgorithmSpecification.MetricDefinitions[0].Name",
        "more than the 255 allowed",
    ),
    (
        "101 hyperparameters",
        _set("HyperParameters", {f"k{i}": "v" for i in range(101)}),
        "HyperParameters",
        "more than the 100 allowed",
    ),
    (
        "a 2501-character hyperparameter",
        _set("HyperParameters/mode", "m" * 2501),
        "HyperParameters.mode",
        "more than the 2500 allowed",
    ),
    (
        "a 257-character hyperparameter key",
        _set("HyperParameters/" + "k" * 257, "v"),
        "HyperParameters." + "k" * 257,
        "longer than 256",
    ),
    (
        "a number as a hyperparameter",
        _set("HyperParameters/epochs", 3),
        "HyperParameters.epochs",
        "must be a string",
    ),
    (
        "101 environment variables",
        _set("Environment", {f"K{i}": "v" for i in range(101)}),
        "Environment",
        "more than the 100 allowed",
    ),
    (
        "an environment key that is not a name",
        _set("Environment/1BAD", "v"),
        "Environment.1BAD",
        "does not match",
    ),
    (
        "a 513-character environment value",
        _set("Environment/A", "v" * 513),
        "Environment.A",
        "more than the 512",
    ),
    (
        "a channel name with a space",
        _set("InputDataConfig/1/ChannelName", "val idation"),
        "InputDataConfig[1].ChannelName",
        "does not match",
    ),
    (
        "a channel name used twice",
        _set("InputDataConfig/1/ChannelName", "train"),
        "InputDataConfig[1].ChannelName",
        "used twice",
    ),
    (
        "a channel without S3Uri",
        _set("InputDataConfig/0/DataSource/S3DataSource/S3Uri", KeyError),
        "InputDataConfig[0].DataSource.S3DataSource.S3Uri",
        "is required",
    ),
    (
        "Gzip in File mode",
        _set("InputDataConfig/0/CompressionType", "Gzip"),
        "InputDataConfig[0].CompressionType",
        "only supported in Pipe mode",
    ),
    (
        "an unknown input mode",
        _set("AlgorithmSpecification/TrainingInputMode", "Stream"),
        "AlgorithmSpecification.TrainingInputMode",
        "is not one of",
    ),
    (
        "MaxRuntimeInSeconds 0",
        _set("StoppingCondition/MaxRuntimeInSeconds", 0),
        "StoppingCondition.MaxRuntimeInSeconds",
        "between 1 and 2419200",
    ),
    (
        "MaxRuntimeInSeconds over 28 days",
        _set("StoppingCondition/MaxRuntimeInSeconds", 2419201),
        "StoppingCondition.MaxRuntimeInSeconds",
        "between 1 and 2419200",
    ),
    ("no StoppingCondition", _set("StoppingCondition", KeyError), "StoppingCondition", "is required"),
    ("no TrainingJobName", _set("TrainingJobName", KeyError), "TrainingJobName", "is required"),
    ("a job name with an underscore", _set("TrainingJobName", "my_job"), "TrainingJobName", "does not match"),
    ("no OutputDataConfig", _set("OutputDataConfig", KeyError), "OutputDataConfig", "is required"),
    ("InstanceCount 0", _set("ResourceConfig/InstanceCount", 0), "ResourceConfig.InstanceCount", ">= 1"),
    (
        "a misspelt field",
        _set("HyperParameter", {}),
        "HyperParameter",
        "is not a member of CreateTrainingJobRequest",
    ),
    (
        "a checkpoint LocalPath outside /opt/ml (not supported locally)",
        _set("CheckpointConfig", {"S3Uri": "s3://bucket/ckpt", "LocalPath": "/data/ckpt"}),
        "CheckpointConfig.LocalPath",
        "outside /opt/ml (not supported by smsupervise-local)",
    ),
    (
        "CheckpointConfig without S3Uri",
        _set("CheckpointConfig", {"LocalPath": "/opt/ml/checkpoints"}),
        "CheckpointConfig.S3Uri",
        "is required",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "path", "rule"), CASES, ids=[c[0] for c in CASES])
def test_each_limit_is_reported_with_its_json_path(
    tmp_path: Path, case: str, mutate: Mutation, path: str, rule: str
) -> None:
    """Breaking one rule gives exactly one problem, at that JSON path, with the rule and a fix."""
    body = copy.deepcopy(_valid(tmp_path))
    mutate(body)
    with pytest.raises(jobs.InvalidRequest) as caught:
        jobs.validate(body, "job.json")
    problems = caught.value.problems
    assert [p.path for p in problems] == [path], (case, problems)
    assert rule in problems[0].rule
    assert problems[0].fix
    assert str(caught.value).startswith(f"job.json: {path}: ")


def test_a_valid_request_passes_and_is_typed(tmp_path: Path) -> None:
    """The negative twin: the unmodified request validates into a frozen record."""
    job = jobs.validate(_valid(tmp_path), "job.json")
    assert (job.name, job.instance_count, job.max_runtime) == ("probe-metrics", 1, 300)
    assert [c.name for c in job.channels] == ["train", "validation"]
    assert job.channels[0].input_mode == "File"
    assert job.metrics == (jobs.Metric("loss", "loss=(.*?);"),)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Two broken rules give two problems, in request order."""
    body = _valid(tmp_path)
    body["TrainingJobName"] = "bad name"
    body["StoppingCondition"]["MaxRuntimeInSeconds"] = -1
    with pytest.raises(jobs.InvalidRequest) as caught:
        jobs.validate(body)
    assert [p.path for p in caught.value.problems] == [
        "TrainingJobName",
        "StoppingCondition.MaxRuntimeInSeconds",
    ]


def test_the_cli_exits_2_names_the_file_and_runs_nothing(tmp_path: Path) -> None:
    """An invalid request file: exit 2, the error names the file and path, no work dir is made."""
    body = _valid(tmp_path)
    body["InputDataConfig"][1]["ChannelName"] = "bad name"
    path = write_request(tmp_path, body)
    work = tmp_path / "work"
    result = subprocess.run(
        [*LOCAL, "run", str(path), "--work-dir", str(work)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert f"{path}: InputDataConfig[1].ChannelName: 'bad name' does not match" in result.stderr
    assert not work.exists()


def test_a_file_that_is_not_json_is_invalid(tmp_path: Path) -> None:
    """A syntax error is reported against the file, with exit 2."""
    path = tmp_path / "job.json"
    path.write_text("{not json")
    result = subprocess.run([*LOCAL, "run", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert f"{path}: $: is not JSON" in result.stderr
