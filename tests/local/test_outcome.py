"""How a job ends: FailureReason, metrics from both streams in every log format, artifacts and describe."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import orjson
import pytest

from tests.local.conftest import JOBS, LOCAL, described, needs_root, request, run

OUT = ("out", "probe-metrics", "output")


@needs_root
def test_a_failing_job_is_failed_with_a_failure_reason(tmp_path: Path) -> None:
    """Exit 1, TrainingJobStatus Failed, and FailureReason (<= 1024 chars) holds the exception line."""
    result = run(tmp_path, request(tmp_path, "fail"))
    assert result.returncode == 1, result.stderr
    body = described(tmp_path)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Failed", "Failed")
    reason = body["FailureReason"]
    assert reason.startswith("AlgorithmError: algo-1 exited with code 1: Training exited with code 1.")
    assert "RuntimeError: the probe failed on purpose at step 3" in reason
    assert len(reason) <= 1024
    # ModelArtifacts is a required member of the response: it names where the model would be, but
    # a failed job uploads nothing (our choice)
    assert (
        body["ModelArtifacts"]["S3ModelArtifacts"] == f"file://{tmp_path}/out/probe-fail/output/model.tar.gz"
    )
    assert not (tmp_path / "out" / "probe-fail" / "output" / "model.tar.gz").exists()
    assert "Failed" in result.stderr


@needs_root
@pytest.mark.parametrize("log_format", ["json", "raw", "text"])
def test_metrics_come_from_both_streams_in_every_log_format(tmp_path: Path, log_format: str) -> None:
    """Each regex's first group, from stdout and stderr, into metrics.jsonl; the last value is final."""
    body = request(tmp_path, "metrics", Environment={"SMSUPERVISE_LOG_FORMAT": log_format})
    body["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "train:loss", "Regex": "train_loss=(.*?);"},
        {"Name": "validation:accuracy", "Regex": r"validation:accuracy=([0-9.]+)"},
        {"Name": "never", "Regex": "no such line=(.*)"},
    ]
    result = run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    samples = [orjson.loads(line) for line in (tmp_path / "work" / "metrics.jsonl").read_bytes().splitlines()]
    assert sorted((s["MetricName"], s["Value"], s["Stream"]) for s in samples) == [
        ("train:loss", 0.25, "stdout"),
        ("train:loss", 0.75, "stdout"),
        ("validation:accuracy", 0.5, "stderr"),
        ("validation:accuracy", 0.875, "stderr"),
    ]
    final = {m["MetricName"]: m["Value"] for m in described(tmp_path)["FinalMetricDataList"]}
    assert final == {"train:loss": 0.25, "validation:accuracy": 0.875}  # "not-a-number" is skipped


@needs_root
def test_metrics_are_read_from_a_container_entrypoints_raw_lines(tmp_path: Path) -> None:
    """ContainerEntrypoint runs as PID 1 without smsupervise; its plain lines are searched too."""
    body = request(tmp_path, "metrics")
    body["AlgorithmSpecification"]["ContainerEntrypoint"] = [
        "sh",
        "-c",
        "echo 'acc=0.5'; echo 'acc=0.75' >&2; echo $$",
    ]
    body["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "acc", "Regex": "^acc=(.*)$"}]
    result = run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    records = [
        orjson.loads(x) for x in (tmp_path / "work" / "logs" / "algo-1.jsonl").read_bytes().splitlines()
    ]
    assert {"stream": "stdout", "msg": "1"}.items() <= next(
        r for r in records if r["msg"] == "1"
    ).items()  # PID 1
    samples = [orjson.loads(line) for line in (tmp_path / "work" / "metrics.jsonl").read_bytes().splitlines()]
    # Both streams are searched; which of two pipes is read first is the kernel's business, so the
    # final value is whichever sample came last, and it must be one of the two.
    assert sorted((s["Value"], s["Stream"]) for s in samples) == [(0.5, "stdout"), (0.75, "stderr")]
    final = {m["MetricName"]: m["Value"] for m in described(tmp_path)["FinalMetricDataList"]}
    assert final == {"acc": samples[-1]["Value"]}


@needs_root
def test_artifacts_have_the_services_layout_and_belong_to_the_caller(tmp_path: Path) -> None:
    """model.tar.gz holds /opt/ml/model, output.tar.gz only output/data, both owned by the caller."""
    result = run(tmp_path, request(tmp_path, "metrics"))
    assert result.returncode == 0, result.stderr
    out = tmp_path.joinpath(*OUT)
    assert sorted(p.name for p in out.iterdir()) == ["model.tar.gz", "output.tar.gz"]
    with tarfile.open(out / "output.tar.gz") as archive:
        assert archive.getnames() == ["out-algo-1.txt"]  # not success/failure: the SDK's mistake
        assert archive.extractfile("out-algo-1.txt").read() == b"output data\n"  # type: ignore[union-attr]
    for path in out.iterdir():
        assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid())
    body = described(tmp_path)
    assert body["ModelArtifacts"] == {"S3ModelArtifacts": f"file://{out}/model.tar.gz"}
    assert body["TrainingJobStatus"] == "Completed"
    assert body["HyperParameters"]["mode"] == "metrics"  # the request is echoed
    assert body["StoppingCondition"] == {"MaxRuntimeInSeconds": 300}
    assert body["TrainingTimeInSeconds"] >= 1


@needs_root
def test_artifacts_go_to_the_sudo_caller(tmp_path: Path) -> None:
    """Run through sudo (SUDO_UID/SUDO_GID): the artifacts and the work dir belong to that user."""
    env = {**os.environ, "SUDO_UID": "65534", "SUDO_GID": "65534"}
    body = request(tmp_path, "metrics")
    path = tmp_path / "job.json"
    path.write_bytes(orjson.dumps(body))
    result = subprocess.run(
        [*LOCAL, "run", str(path), "--work-dir", str(tmp_path / "work")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    for path in [*tmp_path.joinpath(*OUT).iterdir(), tmp_path / "work" / "describe.json"]:
        assert path.stat().st_uid == 65534, path


@needs_root
def test_json_mode_prints_every_record_as_json_with_its_host(tmp_path: Path) -> None:
    """--json: each line on stdout is a JSON record with host and stream; events are JSON on stderr."""
    result = run(tmp_path, request(tmp_path, "metrics"), "--json")
    assert result.returncode == 0, result.stderr
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert {"host": "algo-1", "stream": "stdout", "msg": "epoch=1 train_loss=0.75;"}.items() <= records[
        [r.get("msg") for r in records].index("epoch=1 train_loss=0.75;")
    ].items()
    events = [orjson.loads(line) for line in result.stderr.splitlines()]
    assert events[-1]["event"] == "job_finished"
    assert events[-1]["status"] == "Completed"


@needs_root
def test_the_source_may_be_a_tarball_as_the_sdk_uploads_it(tmp_path: Path) -> None:
    """sagemaker_submit_directory as a sourcedir.tar.gz is unpacked into /opt/ml/code and run."""
    with tarfile.open(tmp_path / "sourcedir.tar.gz", "w:gz") as archive:
        archive.add(JOBS / "probe.py", arcname="probe.py")
    body = request(
        tmp_path,
        "metrics",
        hyperparameters={"sagemaker_submit_directory": f'"file://{tmp_path}/sourcedir.tar.gz"'},
    )
    result = run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    code = tmp_path / "work" / "hosts" / "algo-1" / "opt_ml" / "code"
    assert sorted(p.name for p in code.iterdir()) == ["probe.py"]


def test_describe_prints_the_run_and_exits_with_its_status(tmp_path: Path) -> None:
    """``describe DIR`` prints describe.json and exits 0/1/3 by status; a dir without a run is exit 2."""
    (tmp_path / "describe.json").write_bytes(orjson.dumps({"TrainingJobStatus": "Stopped"}))
    result = subprocess.run([*LOCAL, "describe", str(tmp_path)], capture_output=True, text=True, check=False)
    assert (result.returncode, orjson.loads(result.stdout)) == (3, {"TrainingJobStatus": "Stopped"})
    missing = subprocess.run(
        [*LOCAL, "describe", str(tmp_path / "nope")], capture_output=True, text=True, check=False
    )
    assert missing.returncode == 2
    assert "describe.json" in missing.stderr
