"""A request is checked against botocore's SageMaker service model (the API's members at every
depth, required members, lengths, ranges, enums, patterns), then smsupervise-local's own rules:
every refusal names the JSON path and the fix; every field the runner does not act on is said once
(``field_ignored``), never silently dropped."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsupervise.local import job as jobs
from tests.local.conftest import LOCAL, channel, request, write_request

pytest.importorskip("botocore", reason="botocore is not installed: pip install -e '.[local]'")

TMP = Path("/nonexistent-tmp")  # requests are only validated here, never run


def _valid() -> dict[str, Any]:
    body = request(
        TMP, "hosts", InputDataConfig=[channel("train", "s3://bucket/train"), channel("val", "/data")]
    )
    body["OutputDataConfig"] = {"S3OutputPath": "s3://bucket/out"}
    body["CheckpointConfig"] = {"S3Uri": "s3://bucket/ckpt"}
    return body


def _objects(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """Every (path to a JSON object, one of its keys) in ``value``, maps' free keys left out."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if path[-1:] not in (("HyperParameters",), ("Environment",)):
                found.append((path, key))
            found += _objects(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _objects(item, (*path, i))
    return found


def _json_path(path: tuple[Any, ...], key: str) -> str:
    text = ""
    for part in (*path, key):
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _problems(body: dict[str, Any]) -> list[jobs.Problem]:
    with pytest.raises(jobs.InvalidRequest) as caught:
        jobs.validate(body, "job.json")
    return caught.value.problems


MEMBERS = _objects(_valid())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(MEMBERS), cut=st.integers(0, 30))
def test_a_misspelt_member_at_any_depth_is_refused_with_the_right_name(
    where: tuple[Any, ...], cut: int
) -> None:
    """Any member of a valid request, at any depth, spelt with one character dropped (the class of
    ``StoppingCondition.MaxRuntimeInSecond``): refused at its path, the fix naming the member."""
    path, key = where
    wrong = key[: cut % len(key)] + key[cut % len(key) + 1 :]
    body = copy.deepcopy(_valid())
    parent: Any = body
    for part in path:
        parent = parent[part]
    parent[wrong] = parent.pop(key)
    problems = {p.path: p for p in _problems(body)}
    found = problems[_json_path(path, wrong)]
    assert "is not a member of" in found.rule
    assert key in found.fix


ENUMS = [
    ("AlgorithmSpecification", "TrainingInputMode"),
    ("OutputDataConfig", "CompressionType"),
    ("InputDataConfig/0/DataSource/S3DataSource", "S3DataDistributionType"),
    ("InputDataConfig/0", "RecordWrapperType"),
]


@settings(deadline=None)
@given(where=st.sampled_from(ENUMS), value=st.text(min_size=1, max_size=12))
def test_a_value_outside_an_enum_is_refused_at_its_path(where: tuple[str, str], value: str) -> None:
    """Any string that is not one of an enum's values: refused at that path."""
    parent_path, key = where
    body = copy.deepcopy(_valid())
    parent: Any = body
    for part in parent_path.split("/"):
        parent = parent[int(part)] if part.isdigit() else parent[part]
    if value in (
        "File",
        "Pipe",
        "FastFile",
        "GZIP",
        "NONE",
        "FullyReplicated",
        "ShardedByS3Key",
        "None",
        "RecordIO",
    ):
        return
    parent[key] = value
    path = parent_path.replace("/0", "[0]").replace("/", ".") + "." + key
    assert path in [p.path for p in _problems(body)]


@pytest.mark.parametrize(
    ("mutate", "path", "words"),
    [
        (lambda b: b["OutputDataConfig"].pop("S3OutputPath"), "OutputDataConfig.S3OutputPath", "is required"),
        (lambda b: b.update(RoleArn="not-an-arn-but-long-enough"), "RoleArn", "does not match the pattern"),
        (lambda b: b.update(EnableNetworkIsolation="yes"), "EnableNetworkIsolation", "must be true or false"),
        (lambda b: b.update(Tags=[{"Key": "k" * 129, "Value": "v"}]), "Tags[0].Key", "more than the 128"),
        (lambda b: b.update(InputDataConfig=[]), "InputDataConfig", "fewer than the 1 required"),
        (
            lambda b: b["InputDataConfig"][0]["DataSource"]["S3DataSource"].update(S3Uri="ftp://x/y"),
            "InputDataConfig[0].DataSource.S3DataSource.S3Uri",
            "does not match the pattern",
        ),
        (lambda b: b.update(Tags=[{"Key": "k"}]), "Tags[0].Value", "is required"),
    ],
)
def test_the_apis_own_rules_are_checked(mutate: Any, path: str, words: str) -> None:
    """What only the service model knows: required nested members, patterns, types, lengths."""
    body = copy.deepcopy(_valid())
    mutate(body)
    problems = _problems(body)
    assert path in [p.path for p in problems], problems
    assert words in next(p for p in problems if p.path == path).rule


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        (
            "InputDataConfig/0/DataSource",
            {
                "FileSystemDataSource": {
                    "FileSystemId": "fs-1",
                    "FileSystemAccessMode": "ro",
                    "FileSystemType": "EFS",
                    "DirectoryPath": "/data",
                }
            },
            "EFS and FSx",
        ),
        (
            "ResourceConfig",
            {
                "InstanceGroups": [
                    {"InstanceType": "ml.m5.large", "InstanceCount": 1, "InstanceGroupName": "a"}
                ],
                "VolumeSizeInGB": 10,
            },
            "instance groups",
        ),
        ("AlgorithmSpecification/AlgorithmName", "my-algorithm", "Marketplace"),
    ],
)
def test_what_the_runner_cannot_do_is_refused_with_a_fix(field: str, value: Any, words: str) -> None:
    """EFS/FSx, instance groups, named algorithms: one refusal naming the member, saying why and
    what to do instead."""
    body = copy.deepcopy(_valid())
    *parents, last = field.split("/")
    parent: Any = body
    for part in parents:
        parent = parent[int(part)] if part.isdigit() else parent[part]
    parent[last] = value
    problems = _problems(body)
    refused = [p for p in problems if words in p.rule]
    assert len(refused) == 1, problems
    assert refused[0].fix


def test_local_uris_pass_where_the_api_wants_s3() -> None:
    """The negative twin of the S3Uri pattern: file:// URIs and paths are this runner's S3."""
    body = copy.deepcopy(_valid())
    body["OutputDataConfig"]["S3OutputPath"] = "file:///tmp/out"
    body["CheckpointConfig"]["S3Uri"] = "relative/ckpt"
    assert jobs.validate(body).channels[1].uri == "/data"


IGNORED_EXAMPLES = {
    "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]},
    "EnableManagedSpotTraining": True,
    "DebugHookConfig": {"S3OutputPath": "s3://bucket/debug"},
    "RetryStrategy": {"MaximumRetryAttempts": 2},
}


def test_each_ignored_field_is_a_notice_and_the_rest_are_not() -> None:
    """Fields the runner does not act on are notices naming the field and why; false flags and a
    plain request give none (the twin)."""
    body = copy.deepcopy(_valid())
    body.update(IGNORED_EXAMPLES)
    body["EnableNetworkIsolation"] = False
    notices = [n for n in jobs.validate(body).notices if n.kind == "field_ignored"]
    assert sorted(n.path for n in notices) == sorted([*IGNORED_EXAMPLES, "RoleArn"])
    assert all(n.why for n in notices)
    plain = copy.deepcopy(_valid())
    del plain["RoleArn"]
    assert "RoleArn" in [p.path for p in _problems(plain)]  # required by the API


def test_a_run_says_each_ignored_field_once(tmp_path: Path) -> None:
    """The CLI's JSON events: one field_ignored per ignored field, before the job runs."""
    body = request(tmp_path, "hosts", **IGNORED_EXAMPLES)
    path = write_request(tmp_path, body)
    result = subprocess.run(
        [*LOCAL, "run", str(path), "--work-dir", str(tmp_path / "work"), "--json", "--isolation", "basedir"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    events = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    said = [e["field"] for e in events if e.get("event") == "field_ignored"]
    assert sorted(said) == sorted([*IGNORED_EXAMPLES, "RoleArn"])


def test_without_botocore_the_local_rules_run_and_a_notice_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore missing (its import blocked here): the request is still checked by the local rules
    (an unknown top-level member is refused), and an api_model_missing notice names the extra."""
    from smsupervise.local import apimodel

    monkeypatch.setitem(sys.modules, "botocore", None)  # `import botocore...` raises ImportError
    apimodel.service.cache_clear()
    try:
        notices = jobs.validate(_valid()).notices
        assert [n.kind for n in notices if n.kind == "api_model_missing"] == ["api_model_missing"]
        assert "smsupervise[local]" in next(n.why for n in notices if n.kind == "api_model_missing")
        body = _valid()
        body["HyperParameter"] = {}
        assert [p.path for p in _problems(body)] == ["HyperParameter"]
    finally:
        apimodel.service.cache_clear()
