"""The runner's pure parts: metric extraction, checkpoint mirroring, shards, the config files."""

from __future__ import annotations

from pathlib import Path

import orjson

from smsupervise.local import channels, checkpoints, tree
from smsupervise.local import job as jobs
from smsupervise.local.metrics import Extractor, message
from tests.local.conftest import channel, request


def test_the_message_text_is_what_the_regexes_see() -> None:
    """A smsupervise record gives its msg, a plain line itself, smsupervise's own events nothing."""
    record = orjson.dumps({"ts": "t", "stream": "stdout", "msg": "loss=1;", "seq": 3, "pid": 9})
    assert message(record + b"\n") == "loss=1;"
    assert message(b"loss=2;\r\n") == "loss=2;"
    assert message(b'{"logger": "smsupervise", "event": "child_exited", "msg": "loss=3;"}') is None
    assert message(b'{"loss": 4}') == '{"loss": 4}'  # a job's own JSON line, searched as written


def test_metrics_take_group_1_as_a_float_and_the_last_value_is_final() -> None:
    """First match in a line; no group or a non-number is skipped; the final value is the last seen."""
    extractor = Extractor((jobs.Metric("loss", r"loss=(\S+?);"), jobs.Metric("nogroup", r"loss=\d")))
    try:
        assert [s.value for s in extractor.scan("loss=0.5; loss=0.1;", "algo-1", "stdout", 1.0)] == [0.5]
        assert extractor.scan("loss=nan-ish;", "algo-1", "stdout", 2.0) == []
        assert [s.value for s in extractor.scan("loss=1e-3;", "algo-2", "stderr", 3.0)] == [0.001]
        assert [(s.name, s.value, s.host) for s in extractor.final()] == [("loss", 0.001, "algo-2")]
    finally:
        extractor.close()  # its matcher process


def test_mirroring_copies_changes_out_and_deletes_only_what_this_host_synced(tmp_path: Path) -> None:
    """A deleted local checkpoint is deleted remotely; another host's file in the same place stays."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    (remote / "other-host.ckpt").write_text("theirs")
    (local / "a.ckpt").write_text("1")
    (local / "b.ckpt.tmp").write_text("half")  # a save in progress is not copied
    mirror = checkpoints.Mirror(str(local), checkpoints.DirLocation(str(remote)))
    mirror.sync()
    assert sorted(p.name for p in remote.iterdir()) == ["a.ckpt", "other-host.ckpt"]
    (local / "a.ckpt").unlink()
    (local / "b.ckpt.tmp").rename(local / "b.ckpt")
    mirror.sync()
    assert sorted(p.name for p in remote.iterdir()) == ["b.ckpt", "other-host.ckpt"]
    assert (remote / "b.ckpt").read_text() == "half"


def test_shards_deal_objects_round_robin_and_add_up() -> None:
    """ShardedByS3Key: object i to host i mod N; every object exactly once."""
    items = [f"o{i}" for i in range(7)]
    shares = [channels.share(items, k, 3) for k in (1, 2, 3)]
    assert shares == [["o0", "o3", "o6"], ["o1", "o4"], ["o2", "o5"]]


def test_the_config_files_have_every_field_the_service_writes(tmp_path: Path) -> None:
    """resourceconfig with instance groups; inputdataconfig per channel; FastFile written as File."""
    body = request(
        tmp_path,
        "hosts",
        count=2,
        InputDataConfig=[
            channel("train", "/d", InputMode="FastFile", ContentType="text/csv"),
            channel("stream", "/d", InputMode="Pipe", RecordWrapperType="RecordIO", CompressionType="Gzip"),
        ],
        CheckpointConfig={"S3Uri": "file:///ckpt"},
    )
    job = jobs.validate(body)
    tree.write(job, str(tmp_path / "t"), "algo-2", "/opt/ml")
    config = tmp_path / "t" / "input" / "config"
    assert orjson.loads((config / "resourceconfig.json").read_bytes()) == {
        "current_host": "algo-2",
        "current_instance_type": "ml.m5.large",
        "current_group_name": "homogeneousCluster",
        "hosts": ["algo-1", "algo-2"],
        "network_interface_name": "eth0",
        "instance_groups": [
            {
                "instance_group_name": "homogeneousCluster",
                "instance_type": "ml.m5.large",
                "hosts": ["algo-1", "algo-2"],
            }
        ],
    }
    assert orjson.loads((config / "inputdataconfig.json").read_bytes()) == {
        "train": {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
            "ContentType": "text/csv",
        },
        "stream": {
            "TrainingInputMode": "Pipe",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "RecordIO",
            "CompressionType": "Gzip",
        },
    }
    assert orjson.loads((config / "checkpointconfig.json").read_bytes()) == {
        "LocalPath": "/opt/ml/checkpoints",
        "S3Uri": "file:///ckpt",
    }
