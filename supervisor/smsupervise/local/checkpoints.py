"""CheckpointConfig emulated with a local directory (``file://`` or a path) as the S3 location.

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


def location(uri: str) -> str:
    """The directory behind a checkpoint S3Uri.

    Raises:
        ValueError: an ``s3://`` location (not supported by smsupervise-local's mirror yet).
    """
    if uri.startswith("s3://"):
        raise ValueError(
            f"CheckpointConfig.S3Uri {uri}: s3:// checkpoints are not mirrored locally; use file://"
        )
    return uri[len("file://") :] if uri.startswith("file://") else uri


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
    shutil.copy2(source, partial)
    os.replace(partial, target)


def copy_in(remote: str, local: str) -> int:
    """Copy the location's files into a host's LocalPath at the start; returns how many."""
    os.makedirs(remote, exist_ok=True)
    names = _files(remote)
    for name in names:
        _copy(os.path.join(remote, name), os.path.join(local, name))
    return len(names)


@dataclass
class Mirror:
    """Mirrors one host's LocalPath out to the shared location."""

    local: str
    remote: str
    synced: dict[str, tuple[int, int]] = field(default_factory=dict)

    def sync(self) -> None:
        """Copy new and changed files out; delete there what the job deleted here."""
        now = _files(self.local)
        for name, stamp in now.items():
            if self.synced.get(name) != stamp:
                try:
                    _copy(os.path.join(self.local, name), os.path.join(self.remote, name))
                except FileNotFoundError:
                    continue  # deleted while we looked: the next pass sees it gone
                self.synced[name] = stamp
        for name in set(self.synced) - set(now):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.remote, name))
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
