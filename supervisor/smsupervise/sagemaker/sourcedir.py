"""The user's source (``sagemaker_submit_directory``) into ``<base>/code``, all or nothing.

Like the toolkit: only when the code dir is empty; a local directory is copied, a local or
``file://`` tarball is unpacked (safely: ``unpack``), ``s3://`` is downloaded with boto3 (the
optional ``s3`` extra; ``download``) into a file beside the code dir, then unpacked and removed.
Everything lands in a fresh staging dir that is renamed into place only once the whole source is
in; a refusal, a limit (``--source-max-bytes``, ``--source-max-members``), an error or a stop
removes it (and a leftover of a SIGKILLed run is removed at the next fetch).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from typing import NamedTuple

from smsupervise.errors import ConfigError
from smsupervise.sagemaker import archive
from smsupervise.sagemaker.download import download
from smsupervise.sagemaker.removal import remove_tree
from smsupervise.sagemaker.unpack import FIELD, Job, Limits, Stopped, unpack

__all__ = ["FIELD", "Limits", "SourceView", "Stopped", "fetch", "view"]

STAGING = ".smsupervise-source-"  # prefix of the staging dir: beside the code dir, or in it if a mount


def _never() -> bool:
    return False


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


def view(  # noqa: PLR0911 - one return per kind of source
    uri: str,
    code_dir: str,
    where: str = "hyperparameters.json",
    limits: Limits = Limits(),  # noqa: B008 - an immutable record
    should_stop: Callable[[], bool] = _never,
) -> SourceView:
    """Look at the source without fetching it (for the pure planning step). Reads only, an
    archive within ``limits`` and its header checks (``ConfigError``), asking ``should_stop``
    (``Stopped``) as it reads; ``where`` names the config file in errors."""
    if listing := _listing(code_dir):
        return SourceView("keep", frozenset(listing), None, code_dir)
    if uri.startswith("s3://"):
        return SourceView("download", None, None)
    path = _local(uri)
    if special := _special(uri, path, where):
        raise special
    if os.path.isdir(path):
        return SourceView("copy", frozenset(os.listdir(path)), None, path)
    job = Job(where, limits, should_stop)
    if os.path.isfile(path) and archive.is_archive(path, job):
        try:
            with archive.read(path, job, uri) as (_, infos):
                members = [(os.path.normpath(m.name), m.isfile()) for m in infos]
        except archive.Unreadable:
            return SourceView("unpack", None, None)  # fetch reports it with the file and field
        names = frozenset(name.split("/")[0] for name, _ in members if name != ".")
        return SourceView("unpack", names, frozenset(name for name, is_file in members if is_file))
    if os.path.isfile(path):
        name = os.path.basename(path)
        return SourceView("copy", frozenset({name}), frozenset({name}))
    return SourceView("copy", frozenset(), frozenset())


def _special(uri: str, path: str, where: str) -> ConfigError | None:
    """The error for a source that is neither a directory nor a regular file (a FIFO would be
    waited on for ever, a device read without end); None for anything else."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing: said where it is used
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    return ConfigError(
        where,
        FIELD,
        f"{uri!r} is not a directory or a regular file (a FIFO, socket or device)",
        "point it at a directory or .tar.gz",
    )


def _remove_leftovers(code_dir: str) -> None:
    """Staging dirs of an earlier fetch that was killed outright (SIGKILL): never a half source."""
    for holder in (os.path.dirname(code_dir), code_dir):
        with contextlib.suppress(OSError):
            for name in os.listdir(holder):
                if name.startswith(STAGING):
                    path = os.path.join(holder, name)
                    remove_tree(path)  # a staging dir, or a download of an s3:// source


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
        with contextlib.suppress(OSError):
            remove_tree(staging)
        raise


def _copy_dir(source: str, staging: str, job: Job) -> None:
    """A local directory, without recursion (any depth the kernel's paths reach): symlinks copied
    as symlinks, files with their modes and times, a stop check per entry; anything else (a FIFO,
    a socket, a device) and whatever cannot be copied is refused with its path."""
    dirs: list[str] = [""]  # relative paths still to copy; the staging dir stands for ""
    made: list[tuple[str, str]] = []  # (source dir, copy): modes and times set last, deepest first
    while dirs:
        relative = dirs.pop()
        here, there = os.path.join(source, relative), os.path.join(staging, relative)
        try:
            if relative:
                os.mkdir(there, 0o700)
            made.append((here, there))
            with os.scandir(here) as entries:
                listed = sorted(entries, key=lambda entry: entry.name)
            for entry in listed:
                if job.should_stop():
                    raise Stopped(f"while copying {entry.path}")
                target = os.path.join(there, entry.name)
                if entry.is_symlink():
                    os.symlink(os.readlink(entry.path), target)
                elif entry.is_dir(follow_symlinks=False):
                    dirs.append(os.path.join(relative, entry.name))
                elif entry.is_file(follow_symlinks=False):
                    shutil.copy2(entry.path, target, follow_symlinks=False)
                else:
                    raise _copy_error(
                        job, entry.path, "is not a file, directory or symlink (a FIFO, socket or device)"
                    )
        except OSError as error:
            raise _copy_error(job, here, f"could not be copied ({error.strerror or error})") from None
    for here, there in reversed(made):
        shutil.copystat(here, there, follow_symlinks=False)


def _copy_error(job: Job, path: str, problem: str) -> ConfigError:
    shown = path if len(path) <= 300 else f"...{path[-300:]}"  # a path past PATH_MAX: its end
    return ConfigError(
        job.where,
        FIELD,
        f"{shown!r} {problem}; nothing was copied",
        "point it at a plain directory of your source (or a .tar.gz of it)",
    )


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
    job = Job(where, limits, should_stop)
    if uri.startswith("s3://"):
        holder = code_dir if os.path.ismount(code_dir) else os.path.dirname(code_dir)
        tarball = os.path.join(holder, STAGING + os.urandom(6).hex() + ".tar")  # the code dir's filesystem
        try:
            download(uri, job, tarball)
            if should_stop():
                raise Stopped(f"after downloading {uri}")
            with _staged(code_dir) as staging:
                note = unpack(tarball, staging, job, uri)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tarball)
        return f"downloaded and unpacked {uri}{note}"
    path = _local(uri)
    if not os.path.exists(path):
        raise ConfigError(where, FIELD, f"{uri!r} does not exist", "point it at a directory or .tar.gz")
    if special := _special(uri, path, where):
        raise special
    if os.path.isdir(path):
        if os.path.realpath(path) != os.path.realpath(code_dir):
            with _staged(code_dir) as staging:
                _copy_dir(path, staging, job)
        return f"copied {path}"
    with _staged(code_dir) as staging:
        if archive.is_archive(path, job):
            return f"unpacked {path}{unpack(path, staging, job, uri)}"
        shutil.copy2(path, staging)
    return f"copied {path}"
