"""CheckpointConfig with its S3Uri: an ``s3://`` prefix (boto3), or a local directory (``file://``
or a path) standing in for one.

As the service does (model-checkpoints.md): the location's contents are copied into each host's
LocalPath at the start; while the job runs, files the job writes are copied out and files it
deletes are deleted there too, every ``interval`` seconds and once more at the end. All hosts
share one location (the user keeps names apart, as on the service); a host deletes only files it
had copied out itself. A file is copied when its size or mtime changed, through a temporary name
and ``os.replace``, so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from dataclasses import dataclass, field

from smsupervise.local import s3


@dataclass(frozen=True, slots=True)
class DirLocation:
    """A checkpoint location that is a local directory (``file://`` or a path)."""

    root: str

    def copy_in(self, local: str) -> int:
        """Copy every file into a host's LocalPath; returns how many."""
        os.makedirs(self.root, exist_ok=True)
        names = _files(self.root)
        for name in names:
            _copy(os.path.join(self.root, name), os.path.join(local, name))
        return len(names)

    def put(self, source: str, name: str) -> None:
        """A host's file out, as ``name`` (atomically)."""
        _copy(source, os.path.join(self.root, name))

    def remove(self, name: str) -> None:
        """What the job deleted, deleted here too."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.root, name))


@dataclass(frozen=True, slots=True)
class S3Location:
    """A checkpoint location on S3 (boto3, the ``s3`` extra): ``prefix`` ends with ``/``."""

    prefix: str

    def copy_in(self, local: str) -> int:
        """Download every object under the prefix into a host's LocalPath; returns how many."""
        return s3.download_into(self.prefix, local)

    def put(self, source: str, name: str) -> None:
        """Upload a host's file as ``prefix + name``."""
        s3.upload(source, self.prefix + name)

    def remove(self, name: str) -> None:
        """Delete ``prefix + name``."""
        s3.delete(self.prefix + name)


Location = DirLocation | S3Location


def location(uri: str) -> Location:
    """Where a checkpoint S3Uri points: an S3 prefix (as a directory) or a local directory."""
    if uri.startswith("s3://"):
        return S3Location(uri.rstrip("/") + "/")
    return DirLocation(uri[len("file://") :] if uri.startswith("file://") else uri)


def _files(root: str) -> dict[str, tuple[int, int]]:
    found = {}
    for parent, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith(".tmp"):
                continue  # a write in progress (the atomic-save idiom): synced once it is renamed
            path = os.path.join(parent, name)
            try:
                info = os.stat(path)
            except FileNotFoundError:
                continue
            found[os.path.relpath(path, root)] = (info.st_size, info.st_mtime_ns)
    return found


def _copy(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = f"{target}.smsupervise-local.part"
    try:
        shutil.copy2(source, partial)
        os.replace(partial, target)
    except BaseException:  # e.g. the job deleted the file while it was copied: no half copy stays
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


@dataclass
class Mirror:
    """Mirrors one host's LocalPath out to the shared location. A file that could not be copied out
    (an S3 error) is retried at the next pass; ``problems`` holds the last error per file."""

    local: str
    remote: Location
    synced: dict[str, tuple[int, int]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def sync(self) -> None:
        """Copy new and changed files out; delete there what the job deleted here."""
        now = _files(self.local)
        for name, stamp in now.items():
            if self.synced.get(name) != stamp:
                try:
                    self.remote.put(os.path.join(self.local, name), name)
                except FileNotFoundError:
                    continue  # deleted while we looked: the next pass sees it gone
                except s3.S3Error as error:
                    self.problems[name] = str(error)
                    continue
                self.synced[name] = stamp
                self.problems.pop(name, None)
        for name in set(self.synced) - set(now):
            try:
                self.remote.remove(name)
            except s3.S3Error as error:
                self.problems[name] = str(error)
                continue
            del self.synced[name]


class Mirroring:
    """A thread that syncs every mirror every ``interval`` seconds until ``stop()`` (which syncs last)."""

    def __init__(self, mirrors: list[Mirror], interval: float) -> None:
        self.mirrors = mirrors
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint-mirror", daemon=True)

    def start(self) -> None:
        """Begin mirroring."""
        if self.mirrors:
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            for mirror in self.mirrors:
                mirror.sync()

    def stop(self) -> None:
        """Stop the thread and sync one last time."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        for mirror in self.mirrors:
            mirror.sync()
