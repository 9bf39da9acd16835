"""smsupervise-local with s3:// in the request, against the stand-in endpoint (tests/s3server.py):
File, Pipe and ShardedByS3Key channels, the artifacts uploaded to S3OutputPath, and errors that name
the URI."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from smsupervise.local import checkpoints
from smsupervise.local import s3 as s3mod
from tests.conftest import sleep_until
from tests.local.conftest import JOBS, channel, described, model_file, needs_root, request, run_args

SIBLING = b"in data/training-other/"
OBJECTS = {"data/train/a.csv": b"1,2\n" * 1000, "data/train/sub/b.bin": os.urandom(300_001)}


def _run(tmp: Path, body: dict[str, Any], s3: Any, *extra: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, its boto3 pointed at the stand-in endpoint."""
    env = {**os.environ, **s3.env}
    return subprocess.run(
        run_args(tmp, body, *extra), capture_output=True, text=True, timeout=90, check=False, env=env
    )


ONLY_AT_THE_END = (
    "--checkpoint-interval",
    "3600",
)  # one mirror pass, at the end: what is uploaded is certain


def _fill(s3: Any) -> None:
    for key, data in OBJECTS.items():
        s3.put(f"s3://bucket/{key}", data)
    s3.put("s3://bucket/data/training-other/c.txt", SIBLING)  # a sibling prefix


@needs_root
def test_s3_file_and_pipe_channels_are_byte_exact(tmp_path: Path, s3: Any) -> None:
    """File and Pipe channels from an s3:// prefix reach the job byte for byte, named by what follows
    the prefix; a prefix ending in / excludes a sibling that a bare prefix takes, as on S3."""
    _fill(s3)
    body = request(
        tmp_path,
        "channels",
        InputDataConfig=[
            channel("train", "s3://bucket/data/train/"),
            channel("piped", "s3://bucket/data/train", InputMode="Pipe"),
        ],
    )
    result = _run(tmp_path, body, s3)
    assert result.returncode == 0, result.stderr
    seen = model_file(tmp_path, "channels")
    assert seen["train"]["files"] == {
        "a.csv": hashlib.sha256(OBJECTS["data/train/a.csv"]).hexdigest(),
        "sub/b.bin": hashlib.sha256(OBJECTS["data/train/sub/b.bin"]).hexdigest(),
    }
    assert seen["train"]["write_error"] is None  # a File channel is writable, as on the service
    # "data/train" without the slash is a key prefix, as on S3: it takes the sibling too, named by what
    # follows the prefix ("ing-other/c.txt", between "a.csv" and "sub/b.bin" in path order)
    whole = OBJECTS["data/train/a.csv"] + SIBLING + OBJECTS["data/train/sub/b.bin"]
    assert seen["piped"]["epochs"][0] == {"sha256": hashlib.sha256(whole).hexdigest(), "bytes": len(whole)}


@needs_root
def test_s3_output_path_gets_both_artifacts(tmp_path: Path, s3: Any) -> None:
    """S3OutputPath s3://: model.tar.gz and output.tar.gz land at <path>/<job>/output/, the model
    holding what the job wrote, and ModelArtifacts names the s3:// URI; nothing stays locally."""
    s3.put("s3://results/.keep", b"")
    body = request(tmp_path, "hosts", OutputDataConfig={"S3OutputPath": "s3://results/runs/"})
    result = _run(tmp_path, body, s3)
    assert result.returncode == 0, result.stderr
    assert s3.keys("results") == [
        ".keep",
        "runs/probe-hosts/output/model.tar.gz",
        "runs/probe-hosts/output/output.tar.gz",
    ]
    with tarfile.open(
        fileobj=io.BytesIO(s3.get("s3://results/runs/probe-hosts/output/model.tar.gz"))
    ) as archive:
        assert "hosts-algo-1.json" in archive.getnames()
    with tarfile.open(
        fileobj=io.BytesIO(s3.get("s3://results/runs/probe-hosts/output/output.tar.gz"))
    ) as archive:
        assert all(not name.startswith("failure") for name in archive.getnames())
    body = described(tmp_path)
    assert body["ModelArtifacts"]["S3ModelArtifacts"] == "s3://results/runs/probe-hosts/output/model.tar.gz"
    assert not list((tmp_path / "work").glob("upload/*.tar.gz"))


@needs_root
def test_a_missing_output_bucket_fails_the_job_naming_it(tmp_path: Path, s3: Any) -> None:
    """The negative twin of the upload: a bucket that does not exist fails the job with a ClientError
    naming the s3:// URI and NoSuchBucket."""
    body = request(tmp_path, "hosts", OutputDataConfig={"S3OutputPath": "s3://nobucket/runs"})
    result = _run(tmp_path, body, s3)
    assert result.returncode == 1, result.stderr
    failure = described(tmp_path)["FailureReason"]
    assert failure.startswith(
        "ClientError: s3://nobucket/runs/probe-hosts/output/model.tar.gz: could not upload"
    )
    assert "NoSuchBucket" in failure


@needs_root
def test_s3_sharded_channel_splits_the_objects_over_two_hosts(tmp_path: Path, s3: Any) -> None:
    """ShardedByS3Key over an s3:// prefix and 2 hosts: each a non-empty share, together every object once."""
    names = [f"part-{i:02d}.csv" for i in range(5)]
    for name in names:
        s3.put(f"s3://bucket/shards/{name}", name.encode())
    body = request(
        tmp_path,
        "hosts",
        count=2,
        InputDataConfig=[channel("sharded", "s3://bucket/shards/", distribution="ShardedByS3Key")],
    )
    result = _run(tmp_path, body, s3)
    assert result.returncode == 0, result.stderr
    shards = [model_file(tmp_path, "hosts", host)["shard"] for host in ("algo-1", "algo-2")]
    assert sorted(name for shard in shards for name in shard) == names
    assert all(shards), shards


@needs_root
def test_an_empty_s3_prefix_fails_before_anything_runs(tmp_path: Path, s3: Any) -> None:
    """A prefix holding no object: the job fails with a ClientError naming the URI; no host starts."""
    _fill(s3)
    body = request(tmp_path, "channels", InputDataConfig=[channel("train", "s3://bucket/nothing-here/")])
    result = _run(tmp_path, body, s3)
    assert result.returncode == 1
    failure = described(tmp_path)["FailureReason"]
    assert failure.startswith("ClientError: s3://bucket/nothing-here/: no objects under this prefix")
    assert not (tmp_path / "work" / "logs" / "algo-1.jsonl").exists()
    assert not list((tmp_path / "work" / "s3").glob("*"))


@needs_root
def test_a_stop_request_while_downloading_stops_the_job_before_any_host_starts(
    tmp_path: Path, s3: Any
) -> None:
    """SIGTERM to the runner while a slow s3:// channel downloads: exit 3, Stopped straight from
    Downloading (no Training), no host started, nothing of the download left (its twin, the same
    channel not stopped, is the byte-exact test above)."""
    for i in range(8):
        s3.put(f"s3://bucket/slow/part-{i}.bin", os.urandom(128 << 10))
    s3.store.throttle = 128 << 10  # a second per object
    body = request(tmp_path, "channels", InputDataConfig=[channel("train", "s3://bucket/slow/")])
    process = subprocess.Popen(
        run_args(tmp_path, body),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **s3.env},
    )
    try:
        sleep_until(
            lambda: any(m == "GET" and "part-" in p for m, p, _ in list(s3.store.requests)),
            what="the first object's download",
        )
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 3, err
    body = described(tmp_path)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert [t["Status"] for t in body["SecondaryStatusTransitions"]] == ["Starting", "Downloading", "Stopped"]
    assert "while downloading s3://bucket/slow/" in err
    assert not (tmp_path / "work" / "logs" / "algo-1.jsonl").exists()
    assert not list((tmp_path / "work" / "s3").glob("*"))
    gets = [p for m, p, _ in s3.store.requests if m == "GET" and "part-" in p]
    assert len(gets) < 8  # it did not download the rest first


def _steps(tmp: Path, steps: int, work: str) -> dict[str, Any]:
    body = request(
        tmp,
        "steps",
        hyperparameters={"steps": str(steps)},
        CheckpointConfig={"S3Uri": "s3://ckpt/run-1"},
        name=f"steps-{work}",
    )
    body["OutputDataConfig"] = {"S3OutputPath": f"file://{tmp}/out-{work}"}
    return body


@needs_root
def test_s3_checkpoints_are_copied_in_and_mirrored_back(tmp_path: Path, s3: Any) -> None:
    """CheckpointConfig s3://: the prefix's checkpoint is copied in (the job resumes after it) and
    the job's checkpoints are uploaded at the end, those it deleted first not at all."""
    s3.put("s3://ckpt/run-1/step-000004.json", b'{"step": 4}')
    result = _run(tmp_path, _steps(tmp_path, 9, "work"), s3, *ONLY_AT_THE_END)
    assert result.returncode == 0, result.stderr
    assert model_file(tmp_path, "done") == {"first_step": 5, "last_step": 8}
    assert s3.keys("ckpt") == [
        "run-1/step-000004.json",  # copied in: not this host's to delete
        "run-1/step-000007.json",
        "run-1/step-000008.json",  # 5 and 6: deleted by the job before the one pass
    ]
    assert s3.get("s3://ckpt/run-1/step-000008.json") == b'{"step": 8}'


@needs_root
def test_an_empty_s3_checkpoint_prefix_starts_from_scratch(tmp_path: Path, s3: Any) -> None:
    """The negative twin: nothing under the prefix, so the job starts at step 0 and its checkpoints
    are uploaded."""
    s3.put("s3://ckpt/elsewhere/step-000004.json", b'{"step": 4}')
    result = _run(tmp_path, _steps(tmp_path, 3, "work"), s3, *ONLY_AT_THE_END)
    assert result.returncode == 0, result.stderr
    assert model_file(tmp_path, "done") == {"first_step": 0, "last_step": 2}
    assert [k for k in s3.keys("ckpt") if k.startswith("run-1/")] == [
        "run-1/step-000001.json",
        "run-1/step-000002.json",
    ]


def _source_tarball() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        archive.add(JOBS / "probe.py", arcname="probe.py")
    return out.getvalue()


@needs_root
def test_an_s3_source_reaches_every_host_even_in_its_own_network(tmp_path: Path, s3: Any) -> None:
    """sagemaker_submit_directory s3:// with 2 hosts (each in a network namespace that cannot reach
    the endpoint): the runner stages the source into each host's code dir, and both hosts run it."""
    s3.put("s3://src/job/source/sourcedir.tar.gz", _source_tarball())
    hps = {"sagemaker_submit_directory": '"s3://src/job/source/sourcedir.tar.gz"'}
    result = _run(tmp_path, request(tmp_path, "hosts", count=2, hyperparameters=hps), s3)
    assert result.returncode == 0, result.stderr
    for host in ("algo-1", "algo-2"):
        assert model_file(tmp_path, "hosts", host)["current_host"] == host
        assert (tmp_path / "work" / "hosts" / host / "opt_ml" / "code" / "probe.py").exists()


@needs_root
def test_a_missing_s3_source_fails_before_anything_runs_naming_it(tmp_path: Path, s3: Any) -> None:
    """The negative twin: a source key that is not there fails the job with a ClientError naming the
    URI; no host starts and no host's code dir holds anything."""
    s3.put("s3://src/job/source/other.tar.gz", _source_tarball())
    hps = {"sagemaker_submit_directory": '"s3://src/job/source/sourcedir.tar.gz"'}
    result = _run(tmp_path, request(tmp_path, "hosts", count=2, hyperparameters=hps), s3)
    assert result.returncode == 1, result.stderr
    failure = described(tmp_path)["FailureReason"]
    assert "ClientError: HyperParameters: field 'sagemaker_submit_directory': " in failure
    assert "s3://src/job/source/sourcedir.tar.gz could not be downloaded (NoSuchKey" in failure
    assert not (tmp_path / "work" / "logs" / "algo-1.jsonl").exists()
    assert list((tmp_path / "work" / "hosts" / "algo-1" / "opt_ml" / "code").iterdir()) == []


def test_an_s3_mirror_uploads_changes_and_deletes_only_what_it_uploaded(
    tmp_path: Path, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mirror passes against S3: a new file is uploaded, a file deleted locally after its upload is
    deleted there, another host's object stays, a save in progress (*.tmp) waits for its rename."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    s3.put("s3://ckpt/run/other-host.ckpt", b"theirs")
    local = tmp_path / "local"
    local.mkdir()
    (local / "a.ckpt").write_text("1")
    (local / "b.ckpt.tmp").write_text("half")
    mirror = checkpoints.Mirror(str(local), checkpoints.location("s3://ckpt/run"))
    mirror.sync()
    assert s3.keys("ckpt") == ["run/a.ckpt", "run/other-host.ckpt"]
    (local / "a.ckpt").unlink()
    (local / "b.ckpt.tmp").rename(local / "b.ckpt")
    mirror.sync()
    assert s3.keys("ckpt") == ["run/b.ckpt", "run/other-host.ckpt"]
    assert s3.get("s3://ckpt/run/b.ckpt") == b"half"
    assert mirror.problems == {}


def test_an_s3_mirror_that_cannot_upload_keeps_the_file_for_the_next_pass(
    tmp_path: Path, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The negative twin: with no bucket the upload fails, the file is named in ``problems`` and not
    marked synced, so the pass after the bucket appears uploads it."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    local = tmp_path / "local"
    local.mkdir()
    (local / "a.ckpt").write_text("1")
    mirror = checkpoints.Mirror(str(local), checkpoints.location("s3://late/run/"))
    mirror.sync()
    assert "NoSuchBucket" in mirror.problems["a.ckpt"]
    assert "s3://late/run/a.ckpt" in mirror.problems["a.ckpt"]
    s3.put("s3://late/.keep", b"")
    mirror.sync()
    assert mirror.problems == {}
    assert s3.get("s3://late/run/a.ckpt") == b"1"


def test_s3_without_boto3_is_an_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """boto3 missing (its import blocked here): an s3:// channel is an S3Error (the job's ClientError)
    saying which extra to install, and nothing is left in the download dir."""
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` raises ImportError
    with pytest.raises(s3mod.S3Error) as raised:
        s3mod.download_prefix("s3://bucket/data/", str(tmp_path / "train"))
    assert "pip install 'smsupervise[s3]'" in str(raised.value)
    assert list(tmp_path.iterdir()) == []
