"""The user's source (``sagemaker_submit_directory``) into ``<base>/code``, safely, all or nothing.

Like the toolkit: only when the code dir is empty; a local directory is copied, a local or
``file://`` tarball is unpacked, ``s3://`` is downloaded with boto3 (the optional ``s3`` extra):
streamed in 1 MiB chunks into a file beside the code dir, a stop checked between chunks, renamed
only once complete and removed after the unpack (or on a stop or an error).

Unlike ``extractall`` (and whatever the Python version: the CVE-2025-4517 class gets past
``os.path.realpath`` checks and the ``data`` filter of CPython < 3.11.13/3.12.11/3.13.4), a
tarball is checked whole on names alone before anything is written, then extracted member by
member relative to directory fds, never following a symlink (``O_NOFOLLOW``, ``dir_fd``). Refused:
absolute names, ``..``, anything but regular files, directories, symlinks and hard links, a path
through a symlink, a symlink whose target is absolute, climbs above the code dir or passes through
another symlink, a hard link to anything but a regular file unpacked before it, duplicate names.
Modes keep ``0o755`` at most (no setuid, setgid or sticky bit); files belong to whoever unpacks.
Everything lands in a fresh staging dir that is renamed into place only once the whole source is
in; a refusal, a limit (``--source-max-bytes``, ``--source-max-members``) or a stop removes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple

from smsupervise.errors import ConfigError

FIELD = "sagemaker_submit_directory"
STAGING = ".smsupervise-source-"  # prefix of the staging dir: beside the code dir, or in it if a mount
CHUNK = 1 << 20
_REBUILD = "rebuild the source archive from a plain directory (tar czf sourcedir.tar.gz -C src .)"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Limits(NamedTuple):
    """Against zip bombs: the most bytes written and members unpacked for one source."""

    max_bytes: int = 20 << 30
    max_members: int = 1_000_000


class Stopped(Exception):
    """A stop signal arrived while the source was being fetched; nothing was left behind."""


def _never() -> bool:
    return False


class _Member(NamedTuple):
    """One archive member, checked on its name alone: its path parts and what it is."""

    info: tarfile.TarInfo
    parts: tuple[str, ...]
    link: tuple[str, ...] = ()  # a hard link's source path, in parts


class _Job(NamedTuple):
    """What one fetch needs to say and check: the config file for errors, the limits, the stop."""

    where: str
    limits: Limits
    should_stop: Callable[[], bool]


def _refuse(job: _Job, name: str, problem: str) -> ConfigError:
    return ConfigError(job.where, FIELD, f"archive member {name!r} {problem}; nothing was unpacked", _REBUILD)


def _limit(job: _Job, what: str) -> ConfigError:
    option = "--source-max-bytes" if "bytes" in what else "--source-max-members"
    env = option.upper().replace("--", "SMSUPERVISE_").replace("-", "_")
    return ConfigError(
        job.where,
        FIELD,
        f"the source has more than {what}; nothing was unpacked",
        f"if the archive is really that big, raise {option} (or {env})",
    )


def _parts(name: str) -> tuple[str, ...] | None:
    """The path parts of a relative name without ``.``; None if it is absolute or climbs (``..``)."""
    if name.startswith("/") or "\0" in name:
        return None
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    return None if ".." in parts else parts


def _resolve_link(parent: tuple[str, ...], target: str, links: set[tuple[str, ...]]) -> bool:
    """Whether a symlink in ``parent`` to ``target`` stays in the tree, resolved on names alone.

    Exact because no part but the last may be a symlink: only then is ``..`` a real parent."""
    if not target or target.startswith("/") or "\0" in target:
        return False
    here = list(parent)
    pieces = [piece for piece in target.split("/") if piece not in ("", ".")]
    for index, piece in enumerate(pieces):
        if piece == "..":
            if not here:
                return False
            here.pop()
        else:
            here.append(piece)
            if index < len(pieces) - 1 and tuple(here) in links:
                return False
    return True


def _check(infos: list[tarfile.TarInfo], job: _Job) -> list[_Member]:
    """Every member checked on names alone, before anything is written; raises on the first bad one."""
    links = {parts for info in infos if info.issym() and (parts := _parts(info.name))}
    kinds: dict[tuple[str, ...], str] = {}
    declared = 0
    members: list[_Member] = []
    for info in infos:
        parts = _parts(info.name)
        problem = _member_problem(info, parts, links, kinds)
        if problem:
            raise _refuse(job, info.name, problem)
        assert parts is not None
        declared += info.size if info.isreg() else 0
        if declared > job.limits.max_bytes:
            raise _limit(job, f"{job.limits.max_bytes} bytes (--source-max-bytes)")
        if not parts:  # "." itself
            continue
        kinds[parts] = "dir" if info.isdir() else "file" if info.isreg() else "other"
        members.append(_Member(info, parts, _parts(info.linkname) or () if info.islnk() else ()))
    return members


def _member_problem(  # noqa: PLR0911 - one return per refusal
    info: tarfile.TarInfo,
    parts: tuple[str, ...] | None,
    links: set[tuple[str, ...]],
    kinds: dict[tuple[str, ...], str],
) -> str:
    if parts is None:
        return "has an absolute path or climbs out with '..'"
    if not parts and not info.isdir():
        return "names the code dir itself"
    if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
        return "is not a regular file, directory, symlink or hard link (a device or FIFO)"
    if any(parts[:i] in links for i in range(1, len(parts))):
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


def _write_file(parent: int, member: _Member, data: IO[bytes] | None, job: _Job, written: list[int]) -> None:
    """A regular file from the archive, counting the bytes really written against the limit."""
    fd = os.open(
        member.parts[-1],
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=parent,
    )
    try:
        while data is not None and (chunk := data.read(CHUNK)):
            written[0] += len(chunk)
            if written[0] > job.limits.max_bytes:
                raise _limit(job, f"{job.limits.max_bytes} bytes (--source-max-bytes)")
            if job.should_stop():
                raise Stopped(f"while unpacking {member.info.name}")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fchmod(fd, member.info.mode & 0o755 | 0o600)
        os.utime(fd, (member.info.mtime, member.info.mtime))
    finally:
        os.close(fd)


def _extract_one(archive: tarfile.TarFile, member: _Member, root: int, job: _Job, written: list[int]) -> None:
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
            _write_file(parent, member, archive.extractfile(info), job, written)
    finally:
        os.close(parent)


def _extract(archive: tarfile.TarFile, members: list[_Member], root: int, job: _Job) -> None:
    """Every member, relative to ``root`` (the staging dir's fd); directory modes last."""
    written = [0]
    for member in members:
        if job.should_stop():
            raise Stopped(f"before {member.info.name}")
        try:
            _extract_one(archive, member, root, job, written)
        except OSError as error:  # e.g. ELOOP: a symlink in the way; ENOSPC: a full disk
            raise _refuse(job, member.info.name, f"could not be unpacked ({error.strerror})") from None
    for member in reversed([m for m in members if m.info.isdir()]):  # the owner keeps rwx
        fd = _walk(root, member.parts, create=False)
        try:
            os.fchmod(fd, member.info.mode & 0o755 | 0o700)
        finally:
            os.close(fd)


def _read_members(archive: tarfile.TarFile, job: _Job) -> list[tarfile.TarInfo]:
    """The headers, counted against the member limit while they are read, with a stop check."""
    infos: list[tarfile.TarInfo] = []
    while (info := archive.next()) is not None:
        infos.append(info)
        if len(infos) > job.limits.max_members:
            raise _limit(job, f"{job.limits.max_members} members (--source-max-members)")
        if len(infos) % 256 == 0 and job.should_stop():
            raise Stopped("while reading the archive")
    return infos


def _unpack(tarball: str, staging: str, job: _Job, source: str) -> None:
    try:
        with tarfile.open(tarball, mode="r:*") as archive:
            members = _check(_read_members(archive, job), job)
            root = os.open(staging, _DIR_FLAGS)
            try:
                _extract(archive, members, root, job)
            finally:
                os.close(root)
    except (tarfile.TarError, EOFError) as error:
        raise ConfigError(
            job.where,
            FIELD,
            f"{source} is not a readable tar archive: {error}",
            "point it at a .tar.gz of your source directory",
        ) from None


def _s3_client(uri: str, where: str) -> Any:
    try:
        import boto3  # noqa: PLC0415 - the optional s3 extra
    except ImportError:
        raise ConfigError(
            where,
            FIELD,
            f"{uri} is on S3 but boto3 is not installed",
            "install smsupervise[s3] in the image, or put the code in <base>/code",
        ) from None
    endpoint = os.environ.get("S3_ENDPOINT_URL")  # else boto3 reads AWS_ENDPOINT_URL(_S3) itself
    region = os.environ.get("AWS_REGION") or os.environ.get("SAGEMAKER_REGION")
    return boto3.client("s3", endpoint_url=endpoint, region_name=region)


def _not_downloaded(uri: str, job: _Job, why: str) -> ConfigError:
    return ConfigError(
        job.where,
        FIELD,
        f"{uri} could not be downloaded ({why}); nothing was unpacked",
        "check the bucket, the key and the credentials (the SDK uploads <job>/source/sourcedir.tar.gz)",
    )


def _download_s3(uri: str, job: _Job, target: str) -> None:
    """``uri`` into ``target``, all or nothing: streamed in CHUNK-sized reads into ``target.part``
    with a stop check between chunks, renamed to ``target`` only once every byte is in."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ConfigError(job.where, FIELD, f"{uri!r} is not s3://bucket/key", "name the source's object")
    client = _s3_client(uri, job.where)
    import botocore.exceptions  # noqa: PLC0415 - comes with boto3

    partial = target + ".part"
    got, size = 0, 0
    try:
        try:
            response = client.get_object(Bucket=bucket, Key=key)
            body, size = response["Body"], int(response.get("ContentLength") or 0)
            with open(partial, "xb") as out:
                while True:
                    if job.should_stop():
                        raise Stopped(f"while downloading {uri} at {got} of {size} bytes")
                    chunk = body.read(CHUNK)
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > job.limits.max_bytes:
                        raise _limit(job, f"{job.limits.max_bytes} bytes (--source-max-bytes)")
                    out.write(chunk)
            body.close()
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code") or "?"
            raise _not_downloaded(uri, job, f"{code}: {error}") from None
        except botocore.exceptions.BotoCoreError as error:
            raise _not_downloaded(uri, job, str(error)) from None
        except OSError as error:  # e.g. ENOSPC
            raise _not_downloaded(uri, job, f"{partial}: {error.strerror}") from None
        os.rename(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


class SourceView(NamedTuple):
    """What the code dir will hold once ``fetch`` has run, seen without writing anything."""

    action: str  # what fetch will do: "keep", "copy", "unpack", "download"
    names: frozenset[str] | None  # the top-level names; None: unknown until downloaded
    files: frozenset[str] | None  # every regular file's relative path; None: look in ``root``
    root: str | None = None  # the directory whose files the code dir will hold


def _local(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _listing(code_dir: str) -> list[str]:
    """The code dir's entries, without a staging dir an interrupted fetch left in a mount point."""
    if not os.path.isdir(code_dir):
        return []
    return [name for name in os.listdir(code_dir) if not name.startswith(STAGING)]


def view(uri: str, code_dir: str) -> SourceView:  # noqa: PLR0911 - one return per kind of source
    """Look at the source without fetching it (for the pure planning step). Reads only."""
    if listing := _listing(code_dir):
        return SourceView("keep", frozenset(listing), None, code_dir)
    if uri.startswith("s3://"):
        return SourceView("download", None, None)
    path = _local(uri)
    if os.path.isdir(path):
        return SourceView("copy", frozenset(os.listdir(path)), None, path)
    if os.path.isfile(path) and tarfile.is_tarfile(path):
        try:
            with tarfile.open(path, mode="r:*") as archive:
                members = [(os.path.normpath(m.name), m.isfile()) for m in archive.getmembers()]
        except (tarfile.TarError, EOFError):
            return SourceView("unpack", None, None)  # fetch reports it with the file and field
        names = frozenset(name.split("/")[0] for name, _ in members if name != ".")
        return SourceView("unpack", names, frozenset(name for name, is_file in members if is_file))
    if os.path.isfile(path):
        name = os.path.basename(path)
        return SourceView("copy", frozenset({name}), frozenset({name}))
    return SourceView("copy", frozenset(), frozenset())


def _remove_leftovers(code_dir: str) -> None:
    """Staging dirs of an earlier fetch that was killed outright (SIGKILL): never a half source."""
    for holder in (os.path.dirname(code_dir), code_dir):
        with contextlib.suppress(OSError):
            for name in os.listdir(holder):
                if name.startswith(STAGING):
                    path = os.path.join(holder, name)
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:  # a download of an s3:// source
                        os.unlink(path)


@contextlib.contextmanager
def _staged(code_dir: str) -> Iterator[str]:
    """A fresh staging dir on the code dir's filesystem; moved into place if the body succeeds,
    removed whatever happens otherwise. A mount point cannot be renamed over: then the staging
    dir is made inside it and its entries are renamed up one by one."""
    mounted = os.path.ismount(code_dir)
    holder = code_dir if mounted else os.path.dirname(code_dir)
    staging = os.path.join(holder, STAGING + os.urandom(6).hex())
    os.mkdir(staging, 0o700)
    try:
        yield staging
        if mounted:
            for name in os.listdir(staging):
                os.rename(os.path.join(staging, name), os.path.join(code_dir, name))
            os.rmdir(staging)
        else:
            os.chmod(staging, 0o755)  # noqa: S103 - a code dir as mkdir makes it: others read
            os.rename(staging, code_dir)  # replaces the empty code dir, if there is one
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _copy_dir(source: str, staging: str, job: _Job) -> None:
    """A local directory, symlinks copied as symlinks, with a stop check per file."""

    def copy(src: str, dst: str) -> object:
        if job.should_stop():
            raise Stopped(f"while copying {src}")
        return shutil.copy2(src, dst)

    os.rmdir(staging)  # copytree makes it again: same name, same filesystem
    shutil.copytree(source, staging, symlinks=True, copy_function=copy)


def fetch(
    uri: str,
    code_dir: str,
    where: str,
    limits: Limits = Limits(),  # noqa: B008 - an immutable record
    should_stop: Callable[[], bool] = _never,
) -> str:
    """Put the source at ``uri`` into ``code_dir`` unless it already holds files, all or nothing.

    Returns what was done, for the event log. ``where`` names the config file for errors;
    ``should_stop`` is asked between members and chunks: when it says yes, ``Stopped`` is raised
    and nothing is left behind.
    """
    code_dir = os.path.realpath(code_dir)  # our own path (a symlinked code dir is kept, not replaced)
    _remove_leftovers(code_dir)
    if _listing(code_dir):
        return "kept: the code dir is not empty"
    os.makedirs(os.path.dirname(code_dir), exist_ok=True)
    job = _Job(where, limits, should_stop)
    if uri.startswith("s3://"):
        holder = code_dir if os.path.ismount(code_dir) else os.path.dirname(code_dir)
        tarball = os.path.join(holder, STAGING + os.urandom(6).hex() + ".tar")  # the code dir's filesystem
        try:
            _download_s3(uri, job, tarball)
            if should_stop():
                raise Stopped(f"after downloading {uri}")
            with _staged(code_dir) as staging:
                _unpack(tarball, staging, job, uri)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tarball)
        return f"downloaded and unpacked {uri}"
    path = _local(uri)
    if not os.path.exists(path):
        raise ConfigError(where, FIELD, f"{uri!r} does not exist", "point it at a directory or .tar.gz")
    if os.path.isdir(path):
        if os.path.realpath(path) != os.path.realpath(code_dir):
            with _staged(code_dir) as staging:
                _copy_dir(path, staging, job)
        return f"copied {path}"
    with _staged(code_dir) as staging:
        if tarfile.is_tarfile(path):
            _unpack(path, staging, job, uri)
            return f"unpacked {path}"
        shutil.copy2(path, staging)
    return f"copied {path}"
