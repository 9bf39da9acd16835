"""Staging a job's input channels for one host, without copying the data.

* ``File``: a plain directory the job may write into, as on the service (the SDK's ModelTrainer
  runs ``chmod +x`` on a file in a channel): an overlay (``mount -t overlay``) whose lower layer is
  the staged data and whose upper layer is the host's own directory under ``overlays/``, so that
  staging stays O(1) in the data's size and no write reaches the source. A single-file channel's
  lower layer is a directory holding a hard link to the file (a copy of it when the file is on
  another filesystem than the work dir). Where the kernel refuses the overlay (a work dir on an
  overlayfs, as inside a container: put ``--work-dir`` on a volume; an older kernel in a user
  namespace), the channel is mounted read-only instead and the host's output says so.
* ``FastFile``: the channel's directory (or single file) bind-mounted read-only at
  ``input/data/<channel>``, as on the service. In ``basedir`` mode (no mount namespace) every
  channel is a symlink instead, neither read-only nor copy-on-write (the output says so).
* ``ShardedByS3Key``: the objects (files in sorted path order, as S3 lists keys) are dealt out
  round-robin, object i to host i mod N; each host gets a directory of hard links to its share
  (symlinks where the source is on another filesystem; the source is then bound read-only over
  itself in the host's mount namespace, so that nothing written through a symlink reaches it),
  staged as above. The service documents only "1/n of the objects"; the dealing order is
  our choice.
* ``Pipe``: the FIFOs ``<channel>_<epoch>`` are fed by ``smsupervise.pipemode.emulate`` (a process
  per channel and host), for as many epochs as the job opens; ``RecordWrapperType: RecordIO`` and
  ``CompressionType: Gzip`` become its ``--recordio`` and ``--gunzip``.
* Sources: ``file://`` URIs and local paths; ``s3://`` is downloaded once per job (boto3, the ``s3``
  extra).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

from smsupervise.local import s3
from smsupervise.local.job import Channel
from smsupervise.pipemode.emulate import objects

FOREVER = 1_000_000  # epochs: as many as the job opens; the feeder is ended with the job


@dataclass(frozen=True, slots=True)
class Bind:
    """``source`` shown at ``target`` (relative to the host's tree): read-only, or with ``overlay``
    (a directory holding the overlay's ``upper`` and ``work``) writable as an overlay over
    ``source`` whose writes stay in ``overlay``."""

    source: str
    target: str
    overlay: str | None = None


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
    guards: tuple[str, ...] = ()  # sources a shard's symlinks point into: bound read-only over themselves


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


def _link(source: str, link: str) -> bool:
    """A hard link (a write through the channel's overlay cannot reach a lower file), else a
    symlink (the source on another filesystem); True for a symlink."""
    try:
        os.link(source, link)
    except OSError:
        os.symlink(os.path.abspath(source), link)
        return True
    return False


def _shard_dir(root: str, mine: list[str], shard_root: str) -> tuple[str, bool]:
    """Host's share as a directory of links; and whether any is a symlink (a chmod or a write
    through one reaches the source: the source must then be read-only in the host's namespace)."""
    os.makedirs(shard_root, exist_ok=True)
    symlinked = False
    for item in mine:
        relative = os.path.relpath(item, root) if os.path.isdir(root) else os.path.basename(item)
        link = os.path.join(shard_root, relative)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        symlinked = _link(item, link) or symlinked
    return shard_root, symlinked


def _single_dir(source: str, where: str) -> str:
    """A directory holding only ``source`` (a single-file channel's lower layer): a hard link, or a
    copy of the one file when it is on another filesystem (a symlink would let a chmod reach it)."""
    os.makedirs(where, exist_ok=True)
    target = os.path.join(where, os.path.basename(source))
    if not os.path.lexists(target):
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    return where


def _overlay(state: str) -> str:
    """The overlay's state directory: ``upper`` (the job's writes) and ``work`` (overlayfs's own)."""
    os.makedirs(os.path.join(state, "upper"), exist_ok=True)
    os.makedirs(os.path.join(state, "work"), exist_ok=True)
    return state


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
    guards: list[str] = []  # sources that symlinks point into: read-only in the host's namespace
    for ch in channels:
        source = resolve(ch.uri, os.path.join(work, "s3", ch.name), should_stop)
        if not os.path.exists(source):
            raise FileNotFoundError(f"channel {ch.name!r}: {ch.uri} does not exist; fix its S3Uri")
        items = objects(source)
        if ch.distribution == "ShardedByS3Key":
            items = share(items, index, count)
            shards = os.path.join(work, "shards", f"algo-{index}", ch.name)
            root = os.path.abspath(source)
            source, symlinked = _shard_dir(source, items, shards)
            if symlinked and ch.input_mode != "Pipe":
                guards.append(root)
        total += _size(items)
        host_dir = os.path.join(work, "overlays", f"algo-{index}", ch.name)
        if ch.input_mode == "Pipe":
            feeds.append(PipeFeed(ch.name, source, ch.record_wrapper == "RecordIO", ch.compression == "Gzip"))
        elif ch.input_mode == "File":
            if not os.path.isdir(source):
                source = _single_dir(source, os.path.join(work, "single", ch.name))
            binds.append(Bind(source, f"input/data/{ch.name}", _overlay(host_dir)))
        elif os.path.isdir(source):
            binds.append(Bind(source, f"input/data/{ch.name}"))
        else:
            binds.append(Bind(source, f"input/data/{ch.name}/{os.path.basename(source)}"))
    return Staged(tuple(binds), tuple(feeds), total, tuple(dict.fromkeys(guards)))


def feed_argv(feed: PipeFeed, data_dir: str) -> list[str]:
    """The emulator command that feeds one Pipe channel's FIFOs in ``data_dir``."""
    argv = [sys.executable, "-m", "smsupervise.pipemode.emulate", "--data-dir", data_dir]
    argv += ["--channel", f"{feed.channel}={feed.source}", "--epochs", str(FOREVER)]
    return argv + (["--recordio"] if feed.recordio else []) + (["--gunzip"] if feed.gunzip else [])
