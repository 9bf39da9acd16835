"""The user's source (``sagemaker_submit_directory``) into ``<base>/code``, safely.

Like the toolkit: only when the code dir is empty; a local directory is copied, a local or
``file://`` tarball is unpacked, ``s3://`` is downloaded with boto3 (the optional ``s3`` extra).
Unlike a plain ``extractall``, a tarball with any member that would land outside the code dir
(absolute paths, ``..``, links pointing out) or that is a device or FIFO is refused whole, before
anything is written.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from typing import NamedTuple

from smsupervise.errors import ConfigError

FIELD = "sagemaker_submit_directory"


def _inside(root: str, path: str) -> bool:
    root = os.path.realpath(root)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def _check_members(archive: tarfile.TarFile, where: str, code_dir: str) -> None:
    for member in archive.getmembers():
        name = member.name
        problem = ""
        if name.startswith("/") or os.path.isabs(name):
            problem = "has an absolute path"
        elif ".." in name.replace("\\", "/").split("/"):
            problem = "climbs out with '..'"
        elif member.ischr() or member.isblk() or member.isfifo():
            problem = "is a device or FIFO"
        elif member.issym():
            target = os.path.join(code_dir, os.path.dirname(name), member.linkname)
            if os.path.isabs(member.linkname) or not _inside(code_dir, target):
                problem = f"is a symlink pointing outside the code dir ({member.linkname})"
        elif member.islnk() and (
            os.path.isabs(member.linkname) or not _inside(code_dir, os.path.join(code_dir, member.linkname))
        ):
            problem = f"is a hard link pointing outside the code dir ({member.linkname})"
        elif not _inside(code_dir, os.path.join(code_dir, name)):
            problem = "would land outside the code dir"
        if problem:
            fix = "rebuild the source archive from a plain directory (tar czf sourcedir.tar.gz -C src .)"
            raise ConfigError(where, FIELD, f"archive member {name!r} {problem}; nothing was unpacked", fix)


def _unpack(tarball: str, where: str, code_dir: str) -> None:
    try:
        with tarfile.open(tarball, mode="r:*") as archive:
            _check_members(archive, where, code_dir)
            if hasattr(tarfile, "data_filter"):
                archive.extractall(code_dir, filter="data")
            else:  # pragma: no cover - Python without the 3.12 filter backport
                archive.extractall(code_dir)  # noqa: S202 (every member was checked above)
    except tarfile.TarError as error:
        raise ConfigError(
            where,
            FIELD,
            f"is not a readable tar archive: {error}",
            "point it at a .tar.gz of your source directory",
        ) from None


def _download_s3(uri: str, where: str, into: str) -> str:
    try:
        import boto3  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            where,
            FIELD,
            f"{uri} is on S3 but boto3 is not installed",
            "install smsupervise[s3] in the image, or put the code in <base>/code",
        ) from None
    bucket, _, key = uri[len("s3://") :].partition("/")
    target = os.path.join(into, "sourcedir.tar.gz")
    endpoint = os.environ.get("S3_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("SAGEMAKER_REGION")
    client = boto3.client("s3", endpoint_url=endpoint, region_name=region)
    client.download_file(bucket, key, target)
    return target


class SourceView(NamedTuple):
    """What the code dir will hold once ``fetch`` has run, seen without writing anything."""

    action: str  # what fetch will do: "keep", "copy", "unpack", "download"
    names: frozenset[str] | None  # the top-level names; None: unknown until downloaded
    files: frozenset[str] | None  # every regular file's relative path; None: look in ``root``
    root: str | None = None  # the directory whose files the code dir will hold


def _local(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def view(uri: str, code_dir: str) -> SourceView:  # noqa: PLR0911 - one return per kind of source
    """Look at the source without fetching it (for the pure planning step). Reads only."""
    if os.path.isdir(code_dir) and os.listdir(code_dir):
        return SourceView("keep", frozenset(os.listdir(code_dir)), None, code_dir)
    if uri.startswith("s3://"):
        return SourceView("download", None, None)
    path = _local(uri)
    if os.path.isdir(path):
        return SourceView("copy", frozenset(os.listdir(path)), None, path)
    if os.path.isfile(path) and tarfile.is_tarfile(path):
        try:
            with tarfile.open(path, mode="r:*") as archive:
                members = [(os.path.normpath(m.name), m.isfile()) for m in archive.getmembers()]
        except tarfile.TarError:
            return SourceView("unpack", None, None)  # fetch reports it with the file and field
        names = frozenset(name.split("/")[0] for name, _ in members if name != ".")
        return SourceView("unpack", names, frozenset(name for name, is_file in members if is_file))
    if os.path.isfile(path):
        name = os.path.basename(path)
        return SourceView("copy", frozenset({name}), frozenset({name}))
    return SourceView("copy", frozenset(), frozenset())


def fetch(uri: str, code_dir: str, where: str) -> str:
    """Put the source at ``uri`` into ``code_dir`` unless it already holds files.

    Returns what was done, for the event log. ``where`` names the config file for errors.
    """
    os.makedirs(code_dir, exist_ok=True)
    if os.listdir(code_dir):
        return "kept: the code dir is not empty"
    if uri.startswith("s3://"):
        import tempfile  # noqa: PLC0415 - only for s3:// sources: start-up time counts

        with tempfile.TemporaryDirectory() as tmp:
            _unpack(_download_s3(uri, where, tmp), where, code_dir)
        return f"downloaded and unpacked {uri}"
    path = _local(uri)
    if not os.path.exists(path):
        raise ConfigError(where, FIELD, f"{uri!r} does not exist", "point it at a directory or .tar.gz")
    if os.path.isdir(path):
        if os.path.realpath(path) != os.path.realpath(code_dir):
            shutil.copytree(path, code_dir, dirs_exist_ok=True, symlinks=True)
        return f"copied {path}"
    if tarfile.is_tarfile(path):
        _unpack(path, where, code_dir)
        return f"unpacked {path}"
    shutil.copy2(path, code_dir)
    return f"copied {path}"
