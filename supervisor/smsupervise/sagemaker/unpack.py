"""The safe tar extractor for the user's source: a tarball into an empty staging dir, or nothing.

Unlike ``extractall`` (and whatever the Python version: the CVE-2025-4517 class gets past
``os.path.realpath`` checks and the ``data`` filter of CPython < 3.11.13/3.12.11/3.13.4), a
tarball is checked whole on names alone before anything is written, then extracted member by
member relative to directory fds, never following a symlink (``O_NOFOLLOW``, ``dir_fd``). Refused:
absolute names, ``..``, anything but regular files, directories, symlinks and hard links, a path
through a symlink, a symlink whose target is absolute, climbs above the code dir or passes through
another symlink, a hard link to anything but a regular file unpacked before it, duplicate names.
Modes keep ``0o755`` at most (no setuid, setgid or sticky bit); files belong to whoever unpacks;
times out of range (a PAX ``mtime`` of ``1e400`` or ``nan``) are clamped. The headers are read and
checked by ``archive`` (bounded, stoppable, refusing what tarfile mis-reads). Limits
(``--source-max-bytes``, ``--source-max-members``) stop zip bombs; ``Job.should_stop`` is asked
between members and chunks. The caller (``sourcedir``) owns the staging dir and its removal.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from typing import IO, Any, NamedTuple

from smsupervise.sagemaker import archive as untrusted
from smsupervise.sagemaker.archive import CHUNK, FIELD, Job, Limits, Stopped, bytes_error, limit_error, refuse

__all__ = ["CHUNK", "FIELD", "Job", "Limits", "Stopped", "limit_error", "refuse", "unpack"]
MIN_TIME, MAX_TIME = -float(1 << 31), float(1 << 34)  # years 1901-2514: ext4 and xfs keep them
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Member(NamedTuple):
    """One archive member, checked on its name alone: its path parts and what it is."""

    info: tarfile.TarInfo
    parts: tuple[str, ...]
    link: tuple[str, ...] = ()  # a hard link's source path, in parts


def _parts(name: str) -> tuple[str, ...] | None:
    """The path parts of a relative name without ``.``; None if it is absolute or climbs (``..``)."""
    if name.startswith("/") or "\0" in name:
        return None
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    return None if ".." in parts else parts


class _Links:
    """The archive's symlinks as a tree of names (the key "" marks a symlink: no part is empty),
    so that "is a symlink on this path" costs time linear in the path, whatever its depth."""

    def __init__(self, paths: list[tuple[str, ...]]) -> None:
        self.root: dict[str, Any] = {}
        for parts in paths:
            node = self.root
            for part in parts:
                node = node.setdefault(part, {})
            node[""] = {}

    def through(self, parts: tuple[str, ...]) -> bool:
        """Whether a proper prefix of ``parts`` is a symlink."""
        node: dict[str, Any] | None = self.root
        for part in parts[:-1]:
            node = node.get(part) if node is not None else None
            if node is None:
                return False
            if "" in node:
                return True
        return False


def _resolve_link(parent: tuple[str, ...], target: str, links: _Links) -> bool:
    """Whether a symlink in ``parent`` to ``target`` stays in the tree, resolved on names alone.

    Exact because no part but the last may be a symlink: only then is ``..`` a real parent."""
    if not target or target.startswith("/") or "\0" in target:
        return False
    nodes: list[dict[str, Any] | None] = [links.root]  # the tree's node for each prefix of here
    for part in parent:
        nodes.append(nodes[-1].get(part) if nodes[-1] is not None else None)
    pieces = [piece for piece in target.split("/") if piece not in ("", ".")]
    for index, piece in enumerate(pieces):
        if piece == "..":
            if len(nodes) == 1:
                return False
            nodes.pop()
            continue
        node = nodes[-1]
        child = node.get(piece) if node is not None else None
        nodes.append(child)
        if index < len(pieces) - 1 and child is not None and "" in child:
            return False
    return True


def _check(infos: list[tarfile.TarInfo], job: Job) -> list[_Member]:
    """Every member checked on names alone, before anything is written; raises on the first bad one."""
    links = _Links([parts for info in infos if info.issym() and (parts := _parts(info.name))])
    kinds: dict[tuple[str, ...], str] = {}
    members: list[_Member] = []
    for info in infos:
        parts = _parts(info.name)
        problem = _member_problem(info, parts, links, kinds)
        if problem:
            raise refuse(job, info.name, problem)
        assert parts is not None
        if not parts:  # "." itself
            continue
        kinds[parts] = "dir" if info.isdir() else "file" if info.isreg() else "other"
        members.append(_Member(info, parts, _parts(info.linkname) or () if info.islnk() else ()))
    return members


def _member_problem(  # noqa: PLR0911 - one return per refusal
    info: tarfile.TarInfo,
    parts: tuple[str, ...] | None,
    links: _Links,
    kinds: dict[tuple[str, ...], str],
) -> str:
    if parts is None:
        return "has an absolute path or climbs out with '..'"
    if not parts and not info.isdir():
        return "names the code dir itself"
    if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
        return "is not a regular file, directory, symlink or hard link (a device or FIFO)"
    if links.through(parts):
        return "has a path through a symlink"
    if parts in kinds and not (info.isdir() and kinds[parts] == "dir"):
        return "appears twice in the archive"
    if info.issym() and not _resolve_link(parts[:-1], info.linkname, links):
        return f"is a symlink pointing outside the code dir or through another symlink ({info.linkname})"
    if info.islnk():
        source = _parts(info.linkname)
        if source is None or kinds.get(source) != "file":
            return f"is a hard link to something other than a regular file before it ({info.linkname})"
    return ""


def _walk(root: int, parts: tuple[str, ...], create: bool) -> int:
    """An fd of the directory ``parts`` under ``root``, never following a symlink (ELOOP if one is
    in the way); with ``create``, missing directories are made. The caller closes the fd."""
    fd = os.dup(root)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)  # a dir the archive does not list: as mkdir makes it
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _mtime(value: float) -> float:
    """A header's time as the kernel takes it: NaN is 0, anything else is kept within years
    1901-2514 (a PAX ``mtime`` of ``1e400``, ``inf`` or 40 digits is clamped, not an OverflowError)."""
    return 0.0 if value != value else min(max(float(value), MIN_TIME), MAX_TIME)  # noqa: PLR0124 - NaN


class _Tally:
    """What one unpack counted: bytes really written (against the limit), times clamped."""

    def __init__(self) -> None:
        self.written = 0
        self.clamped = 0


def _write_file(parent: int, member: _Member, data: IO[bytes] | None, job: Job, tally: _Tally) -> None:
    """A regular file from the archive, counting the bytes really written against the limit."""
    fd = os.open(
        member.parts[-1],
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=parent,
    )
    try:
        while data is not None and (chunk := data.read(CHUNK)):
            tally.written += len(chunk)
            if tally.written > job.limits.max_bytes:
                raise bytes_error(job)
            if job.should_stop():
                raise Stopped(f"while unpacking {member.info.name}")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fchmod(fd, member.info.mode & 0o755 | 0o600)
        when = _mtime(member.info.mtime)
        tally.clamped += when != member.info.mtime
        os.utime(fd, (when, when))
    finally:
        os.close(fd)


def _extract_one(archive: tarfile.TarFile, member: _Member, root: int, job: Job, tally: _Tally) -> None:
    """One member, in its parent reached from ``root`` without following a symlink."""
    info, name = member.info, member.parts[-1]
    parent = _walk(root, member.parts[:-1], create=True)
    try:
        if info.isdir():
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=parent)
            os.close(os.open(name, _DIR_FLAGS, dir_fd=parent))  # a dir, not a link
        elif info.issym():
            os.symlink(info.linkname, name, dir_fd=parent)
        elif info.islnk():
            source = _walk(root, member.link[:-1], create=False)
            try:
                os.link(member.link[-1], name, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(source)
        else:
            _write_file(parent, member, archive.extractfile(info), job, tally)
    finally:
        os.close(parent)


def _extract(archive: tarfile.TarFile, members: list[_Member], root: int, job: Job) -> _Tally:
    """Every member, relative to ``root`` (the staging dir's fd); directory modes last."""
    tally = _Tally()
    for member in members:
        if job.should_stop():
            raise Stopped(f"before {member.info.name}")
        try:
            _extract_one(archive, member, root, job, tally)
        except OSError as error:  # e.g. ELOOP: a symlink in the way; ENOSPC: a full disk
            raise refuse(job, member.info.name, f"could not be unpacked ({error.strerror})") from None
    for member in reversed([m for m in members if m.info.isdir()]):  # the owner keeps rwx
        fd = _walk(root, member.parts, create=False)
        try:
            os.fchmod(fd, member.info.mode & 0o755 | 0o700)
        finally:
            os.close(fd)
    return tally


def unpack(tarball: str, staging: str, job: Job, source: str) -> str:
    """Every member of ``tarball`` (``source`` names it in errors) into the empty dir ``staging``,
    after the whole archive passed the checks; raises ``ConfigError`` or ``Stopped``. Returns a
    note for the event log: "" or how many times out of range were clamped."""
    with untrusted.read(tarball, job, source) as (archive, infos):
        members = _check(infos, job)
        root = os.open(staging, _DIR_FLAGS)
        try:
            tally = _extract(archive, members, root, job)
        finally:
            os.close(root)
    if not tally.clamped:
        return ""
    return f" ({tally.clamped} file times out of range, e.g. a PAX mtime of 1e400, set within 1901-2514)"
