"""CheckpointConfig with its S3Uri: an ``s3://`` prefix (boto3), or a local directory (``file://``
or a path) standing in for one.

As the service does (model-checkpoints.md): the location's contents are copied into each host's
LocalPath at the start; while the job runs, files the job writes are copied out and files it
deletes are deleted there too, every ``interval`` seconds and once more at the end. All hosts
share one location (the user keeps names apart, as on the service); a host deletes only files it
had copied out itself. A file is copied when its size or mtime changed, through a temporary name
and ``os.replace``, so a reader never sees half a checkpoint.

Only regular files are checkpoints (a link to one counts as the file): a FIFO (which would block
the copy for ever), a socket, a device, a link to nowhere or to itself is skipped and reported once
(``on_skip``: its name and what it is); the check is made on the opened file, so a file swapped for
a FIFO between the look and the copy is caught too. An error on one file never stops the others
nor the mirror: it is kept in ``problems`` and retried at the next pass. The walk is iterative (a
directory 1500 levels deep is no RecursionError).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from smsupervise.local import s3


@dataclass(frozen=True, slots=True)
class DirLocation:
    """A checkpoint location that is a local directory (``file://`` or a path)."""

    root: str

    def copy_in(self, local: str, on_skip: Skip | None = None) -> int:
        """Copy every regular file into a host's LocalPath; returns how many."""
        os.makedirs(self.root, exist_ok=True)
        skipped: dict[str, str] = {}
        copied = 0
        for name in _files(self.root, skipped):
            try:
                _copy(os.path.join(self.root, name), os.path.join(local, name))
            except NotRegular as error:
                skipped[name] = str(error)
                continue
            copied += 1
        for name, kind in sorted(skipped.items()):
            (on_skip or _ignore)(name, kind)
        return copied

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

    def copy_in(self, local: str, on_skip: Skip | None = None) -> int:
        """Download every object under the prefix into a host's LocalPath; returns how many (an
        object is always a regular file: ``on_skip`` is never called)."""
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


Skip = Callable[[str, str], None]  # (name under the root, what it is)


def _ignore(_name: str, _kind: str) -> None:
    return None


class NotRegular(OSError):
    """Not a regular file (a FIFO, a socket, a device...): not a checkpoint."""


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


def _kind(mode: int, linked: bool) -> str:
    what = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return f"a link to {what}" if linked else what


def _files(root: str, skipped: dict[str, str] | None = None) -> dict[str, tuple[int, int]]:
    """Regular files under ``root`` (links to them too): name -> (size, mtime); anything else
    into ``skipped`` (name -> what it is). Iterative, for any depth."""
    found: dict[str, tuple[int, int]] = {}
    pending = [root]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                listed = list(entries)
        except OSError:
            continue  # removed while we looked: the next pass sees it gone
        for entry in listed:
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
                continue
            if entry.name.endswith(".tmp"):
                continue  # a write in progress (the atomic-save idiom): synced once it is renamed
            name = os.path.relpath(entry.path, root)
            linked = entry.is_symlink()
            try:
                info = os.stat(entry.path)
            except FileNotFoundError:
                if linked and skipped is not None:
                    skipped[name] = f"a link to nothing ({os.readlink(entry.path)!r})"
                continue
            except OSError as error:  # a link to itself (ELOOP), a name too long...
                if skipped is not None:
                    skipped[name] = f"not readable ({error.strerror})"
                continue
            if not stat.S_ISREG(info.st_mode):
                if skipped is not None:
                    skipped[name] = _kind(info.st_mode, linked)
                continue
            found[name] = (info.st_size, info.st_mtime_ns)
    return found


def _makedirs(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)`` without its recursion (one call per missing level)."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)


def _copy(source: str, target: str) -> None:
    """``source`` (a regular file, checked once open: a FIFO never blocks us) to ``target``,
    atomically, with its mode and times."""
    fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as reader:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegular(_kind(info.st_mode, os.path.islink(source)))
        _makedirs(os.path.dirname(target))
        partial = f"{target}.smsupervise-local.part"
        try:
            with open(partial, "wb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
            os.chmod(partial, stat.S_IMODE(info.st_mode))
            os.utime(partial, ns=(info.st_atime_ns, info.st_mtime_ns))
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
    on_skip: Skip = _ignore
    synced: dict[str, tuple[int, int]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def _skip(self, name: str, kind: str) -> None:
        if name not in self.skipped:
            self.skipped[name] = kind
            self.on_skip(name, kind)

    def sync(self) -> None:
        """Copy new and changed files out; delete there what the job deleted here."""
        special: dict[str, str] = {}
        now = _files(self.local, special)
        for name, kind in special.items():
            self._skip(name, kind)
        for name, stamp in now.items():
            if self.synced.get(name) != stamp:
                try:
                    self.remote.put(os.path.join(self.local, name), name)
                except FileNotFoundError:
                    continue  # deleted while we looked: the next pass sees it gone
                except NotRegular as error:  # swapped for a FIFO (say) after we looked
                    self._skip(name, str(error))
                    continue
                except (s3.S3Error, OSError) as error:
                    self.problems[name] = str(error)
                    continue
                self.synced[name] = stamp
                self.problems.pop(name, None)
        for name in set(self.synced) - set(now):
            try:
                self.remote.remove(name)
            except (s3.S3Error, OSError) as error:
                self.problems[name] = str(error)
                continue
            del self.synced[name]


EVERY_FILE = "(the whole pass)"  # the problems key of a pass that failed as a whole


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

    def _pass(self) -> None:
        for mirror in self.mirrors:
            try:
                mirror.sync()
            except Exception as error:  # never the end of mirroring: the next pass tries again
                mirror.problems[EVERY_FILE] = (
                    f"a pass over {mirror.local} failed: {type(error).__name__}: {error}"
                )
            else:
                mirror.problems.pop(EVERY_FILE, None)

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self._pass()

    def stop(self) -> None:
        """Stop the thread and sync one last time."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        self._pass()
