"""File, FastFile, Pipe and Pipe+RecordIO+Gzip channels reach the job byte for byte."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

from tests.local.conftest import channel, described, model_file, needs_root, request, run

RECORDIO_MAGIC = 0xCED7230A


def _data(root: Path) -> dict[str, bytes]:
    """A channel directory with nested files of varied sizes; returns path -> bytes."""
    files = {"a.csv": b"1,2\n" * 1000, "sub/b.bin": os.urandom(300_001), "sub/deeper/c.txt": b"c" * 7}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def _digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


@needs_root
def test_file_and_fastfile_channels_are_byte_exact_views(tmp_path: Path) -> None:
    """File and FastFile channels show the source files exactly, without a copy: FastFile read-only
    (a bind mount), File writable (an overlay; tests/local/test_channels_writable.py), the source
    untouched."""
    files = _data(tmp_path / "train")
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "one.bin").write_bytes(b"x" * 4097)
    body = request(
        tmp_path,
        "channels",
        InputDataConfig=[
            channel("train", f"file://{tmp_path}/train"),
            channel("fast", str(tmp_path / "train"), InputMode="FastFile"),
            channel("one", f"file://{tmp_path}/single/one.bin"),
        ],
    )
    result = run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    seen = model_file(tmp_path, "channels")
    for name in ("train", "fast"):
        assert seen[name]["files"] == _digests(files), name
    assert seen["fast"]["write_error"] == "Read-only file system"
    assert seen["fast"]["mount"].split(",")[0] == "ro"
    assert (seen["train"]["write_error"], seen["train"]["fstype"]) == (None, "overlay")  # File: writable
    assert seen["one"]["files"] == {"one.bin": hashlib.sha256(b"x" * 4097).hexdigest()}
    assert seen["input_data_config"]["fast"]["TrainingInputMode"] == "File"  # as the service writes FastFile
    assert not (tmp_path / "train" / "written-by-the-job").exists()


@needs_root
def test_pipe_channels_stream_every_epoch_byte_exact(tmp_path: Path) -> None:
    """A Pipe channel's FIFOs <ch>_0 and <ch>_1 carry the objects concatenated in path order."""
    files = _data(tmp_path / "train")
    body = request(
        tmp_path,
        "channels",
        hyperparameters={"epochs": "2"},
        InputDataConfig=[channel("train", f"file://{tmp_path}/train", InputMode="Pipe")],
    )
    result = run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    expected = b"".join(files[name] for name in sorted(files))
    seen = model_file(tmp_path, "channels")
    assert seen["input_data_config"]["train"]["TrainingInputMode"] == "Pipe"
    assert (
        seen["train"]["epochs"]
        == [{"sha256": hashlib.sha256(expected).hexdigest(), "bytes": len(expected)}] * 2
    )


@needs_root
def test_pipe_channels_with_recordio_and_gzip_are_byte_exact(tmp_path: Path) -> None:
    """RecordWrapperType RecordIO wraps each gunzipped object (CompressionType Gzip) in one record."""
    (tmp_path / "gz").mkdir()
    objects = [os.urandom(1000), b"hello" * 3, b""]
    for i, data in enumerate(objects):
        (tmp_path / "gz" / f"part-{i}.gz").write_bytes(gzip.compress(data))
    body = request(
        tmp_path,
        "channels",
        InputDataConfig=[
            channel(
                "train",
                f"file://{tmp_path}/gz",
                InputMode="Pipe",
                RecordWrapperType="RecordIO",
                CompressionType="Gzip",
            ),
        ],
    )
    result = run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    expected = b"".join(
        struct.pack("<II", RECORDIO_MAGIC, len(data)) + data + b"\0" * (-len(data) % 4) for data in objects
    )
    seen = model_file(tmp_path, "channels")
    assert seen["input_data_config"]["train"]["RecordWrapperType"] == "RecordIO"
    assert seen["train"]["epochs"] == [
        {"sha256": hashlib.sha256(expected).hexdigest(), "bytes": len(expected)}
    ]


@needs_root
def test_a_missing_channel_source_fails_before_anything_runs(tmp_path: Path) -> None:
    """A missing channel source: no host starts, the job fails with a ClientError naming the channel."""
    body = request(tmp_path, "channels", InputDataConfig=[channel("train", f"file://{tmp_path}/nowhere")])
    result = run(tmp_path, body)
    assert result.returncode == 1
    assert "channel 'train'" in result.stderr
    assert f"{tmp_path}/nowhere" in result.stderr
    assert not (tmp_path / "work" / "logs" / "algo-1.jsonl").exists()
    body = described(tmp_path)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Failed", "Failed")
    assert body["FailureReason"].startswith("ClientError: channel 'train'")
