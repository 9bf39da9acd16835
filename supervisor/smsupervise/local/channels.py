"""Staging a job's input channels for one host, without copying the data.

* ``File`` and ``FastFile``: the channel's directory (or single file) is bind-mounted read-only at
  ``input/data/<channel>``: O(1) in the data's size. In ``basedir`` mode (no mount namespace) it is
  a symlink instead, which is not read-only (the output says so).
* ``ShardedByS3Key``: the objects (files in sorted path order, as S3 lists keys) are dealt out
  round-robin, object i to host i mod N; each host gets a directory of symlinks to its share,
  bind-mounted read-only. The service documents only "1/n of the objects"; the dealing order is
  our choice.
* ``Pipe``: the FIFOs ``<channel>_<epoch>`` are fed by ``smsupervise.pipemode.emulate`` (a process
  per channel and host), for as many epochs as the job opens; ``RecordWrapperType: RecordIO`` and
  ``CompressionType: Gzip`` become its ``--recordio`` and ``--gunzip``.
* Sources: ``file://`` URIs and local paths; ``s3://`` is downloaded once per job (boto3, the ``s3``
  extra).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from smsupervise.local import s3
from smsupervise.local.job import Channel
from smsupervise.pipemode.emulate import objects

FOREVER = 1_000_000  # epochs: as many as the job opens; the feeder is ended with the job


@dataclass(frozen=True, slots=True)
class Bind:
    """A read-only view: ``source`` shown at ``target`` (relative to the host's tree)."""

    source: str
    target: str


@dataclass(frozen=True, slots=True)
class PipeFeed:
    """One Pipe channel's feeder for one host."""

    channel: str
    source: str
    recordio: bool
    gunzip: bool


@dataclass(frozen=True, slots=True)
class Staged:
    """What one host's channels need: views, feeders, and the bytes they expose."""

    binds: tuple[Bind, ...]
    feeds: tuple[PipeFeed, ...]
    bytes: int


def resolve(uri: str, download_dir: str, should_stop: Callable[[], bool]) -> str:
    """The local path behind a channel's S3Uri (``file://``, a path, or ``s3://`` downloaded)."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    if uri.startswith("s3://"):
        return s3.download_prefix(uri, download_dir, should_stop)
    return uri


def share(items: list[str], index: int, count: int) -> list[str]:
    """Host ``index`` (1-based) of ``count``'s share of the objects: every count-th, from index-1."""
    return items[index - 1 :: count]


def _shard_dir(root: str, mine: list[str], shard_root: str) -> str:
    os.makedirs(shard_root, exist_ok=True)
    for item in mine:
        relative = os.path.relpath(item, root) if os.path.isdir(root) else os.path.basename(item)
        link = os.path.join(shard_root, relative)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.abspath(item), link)
    return shard_root


def _size(items: list[str]) -> int:
    return sum(os.path.getsize(item) for item in items)


def stage(
    channels: tuple[Channel, ...], index: int, count: int, work: str, should_stop: Callable[[], bool]
) -> Staged:
    """Plan host ``index``'s channels; shard directories go under ``work``; ``should_stop`` is asked
    between the objects of an ``s3://`` channel.

    Raises:
        FileNotFoundError: a channel's source does not exist (named with the channel).
        s3.Stopped: a stop request came during a download.
    """
    binds, feeds, total = [], [], 0
    for ch in channels:
        source = resolve(ch.uri, os.path.join(work, "s3", ch.name), should_stop)
        if not os.path.exists(source):
            raise FileNotFoundError(f"channel {ch.name!r}: {ch.uri} does not exist; fix its S3Uri")
        items = objects(source)
        if ch.distribution == "ShardedByS3Key":
            items = share(items, index, count)
            source = _shard_dir(source, items, os.path.join(work, "shards", f"algo-{index}", ch.name))
        total += _size(items)
        if ch.input_mode == "Pipe":
            feeds.append(PipeFeed(ch.name, source, ch.record_wrapper == "RecordIO", ch.compression == "Gzip"))
        elif os.path.isdir(source):
            binds.append(Bind(source, f"input/data/{ch.name}"))
        else:
            binds.append(Bind(source, f"input/data/{ch.name}/{os.path.basename(source)}"))
    return Staged(tuple(binds), tuple(feeds), total)


def feed_argv(feed: PipeFeed, data_dir: str) -> list[str]:
    """The emulator command that feeds one Pipe channel's FIFOs in ``data_dir``."""
    argv = [sys.executable, "-m", "smsupervise.pipemode.emulate", "--data-dir", data_dir]
    argv += ["--channel", f"{feed.channel}={feed.source}", "--epochs", str(FOREVER)]
    return argv + (["--recordio"] if feed.recordio else []) + (["--gunzip"] if feed.gunzip else [])
