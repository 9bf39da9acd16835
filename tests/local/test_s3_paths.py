"""Where an S3Prefix channel's objects land: the whole S3Uri prefix is cut from each key as a string
(as the SDK's local mode does, ``sagemaker.utils._download_files_under_prefix``), a leading ``/`` of
what is left dropped; a key that is the prefix itself lands under its basename. With or without a
trailing ``/`` on the URI, ``s3://b/inputs/train`` + ``inputs/train/x.npz`` is ``<channel>/x.npz``."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsupervise.local import checkpoints
from smsupervise.local import s3 as s3mod
from tests.local.conftest import channel, model_file, needs_root, request, run_args

# Key segments as S3 allows them (any character but "/"), without the "." and ".." that would escape.
SEGMENT = st.text(st.characters(blacklist_characters="/\0", codec="utf-8"), min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)
PATHS = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join)


@given(prefix=PATHS, rest=PATHS, slash=st.booleans())
def test_an_object_below_the_prefix_lands_at_its_path_below_it(prefix: str, rest: str, slash: bool) -> None:
    """The class of the bug: for any prefix, with or without its trailing /, the object
    ``prefix/rest`` lands at ``rest`` (not one directory deeper, at ``basename(prefix)/rest``)."""
    uri_prefix = prefix + "/" if slash else prefix
    assert s3mod.relative_name(f"{prefix}/{rest}", uri_prefix) == rest


@given(prefix=PATHS, tail=SEGMENT)
def test_a_key_sharing_the_prefix_as_a_string_keeps_what_follows(prefix: str, tail: str) -> None:
    """A sibling key that only starts with the prefix's characters (``inputs/train2/x`` under the
    prefix ``inputs/train``) is an S3Prefix match too: it lands at what follows the prefix
    (``2/x``), as in the SDK's local mode; never above the channel."""
    name = s3mod.relative_name(f"{prefix}{tail}/x", prefix)
    assert name == f"{tail}/x"


@given(prefix=PATHS)
def test_a_key_that_is_the_prefix_lands_under_its_basename(prefix: str) -> None:
    """The negative twin: the URI names one object exactly; it lands as its own basename."""
    assert s3mod.relative_name(prefix, prefix) == prefix.rsplit("/", 1)[-1]


@given(prefix=PATHS, rest=PATHS)
def test_a_key_whose_rest_escapes_is_refused(prefix: str, rest: str) -> None:
    """A key whose part after the prefix holds ``..`` would land outside the channel: None."""
    assert s3mod.relative_name(f"{prefix}/../{rest}", prefix) is None
    assert s3mod.relative_name(f"{prefix}/{rest}/..", prefix + "/") is None


SIBLING = b"in data/train2/"
OBJECTS = {"data/train/a.csv": b"1,2\n" * 100, "data/train/sub/b.bin": os.urandom(70_001)}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@needs_root
def test_every_channel_kind_strips_a_prefix_without_its_slash(tmp_path: Path, s3: Any) -> None:
    """File, FastFile and a ShardedByS3Key channel over ``s3://bucket/data/train`` (the URI that
    ``Session.upload_data()`` returns): the objects are at the channel's top, as on the service; the
    sibling key ``data/train2/c.txt`` lands at ``2/c.txt``."""
    for key, data in OBJECTS.items():
        s3.put(f"s3://bucket/{key}", data)
    s3.put("s3://bucket/data/train2/c.txt", SIBLING)
    body = request(
        tmp_path,
        "channels",
        InputDataConfig=[
            channel("train", "s3://bucket/data/train"),
            channel("fast", "s3://bucket/data/train", InputMode="FastFile"),
            channel("sharded", "s3://bucket/data/train", distribution="ShardedByS3Key"),
            channel("one", "s3://bucket/data/train/a.csv"),
        ],
    )
    env = {**os.environ, **s3.env}
    result = subprocess.run(
        run_args(tmp_path, body), capture_output=True, text=True, timeout=90, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    seen = model_file(tmp_path, "channels")
    expected = {
        "a.csv": _digest(OBJECTS["data/train/a.csv"]),
        "sub/b.bin": _digest(OBJECTS["data/train/sub/b.bin"]),
        "2/c.txt": _digest(SIBLING),
    }
    for name in ("train", "fast", "sharded"):
        assert seen[name]["files"] == expected, name
    assert seen["one"]["files"] == {"a.csv": _digest(OBJECTS["data/train/a.csv"])}


def test_a_checkpoint_uri_is_a_directory_with_or_without_its_slash(
    tmp_path: Path, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CheckpointConfig.S3Uri is a directory, unlike a channel's key prefix: ``s3://ckpt/run-1``
    and ``s3://ckpt/run-1/`` both copy in run-1's objects by their path below it, never run-10's."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    s3.put("s3://ckpt/run-1/step-1.json", b"1")
    s3.put("s3://ckpt/run-1/sub/step-2.json", b"2")
    s3.put("s3://ckpt/run-10/step-9.json", b"9")
    for i, uri in enumerate(("s3://ckpt/run-1", "s3://ckpt/run-1/")):
        local = tmp_path / f"local-{i}"
        local.mkdir()
        assert checkpoints.location(uri).copy_in(str(local)) == 2
        assert sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == [
            "step-1.json",
            "sub/step-2.json",
        ]
