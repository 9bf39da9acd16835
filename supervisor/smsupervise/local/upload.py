"""The job's results handed over: ``model.tar.gz`` and ``output.tar.gz`` packed from every host's
tree (``artifacts``) into ``OutputDataConfig.S3OutputPath`` (a directory, ``file://``, or ``s3://``
through the work dir), and everything we leave owned by the user who ran us through sudo.
"""

from __future__ import annotations

import os
import stat

from smsupervise.local import artifacts, s3
from smsupervise.local.console import Console
from smsupervise.local.job import TrainingJob


def upload(job: TrainingJob, trees: list[str], work: str, console: Console) -> str:
    """Pack and place both archives, an ``uploaded`` event each; returns the model's URI."""
    if job.output_compression == "NONE":
        return artifacts.uncompressed(job.output_path, job.name, trees, console, give_back)
    out = job.output_path
    remote = f"{out.rstrip('/')}/{job.name}/output" if out.startswith("s3://") else None
    out = out[len("file://") :] if out.startswith("file://") else out
    # s3://: packed in the work dir first, then uploaded (boto3 needs a file for a multipart upload)
    target = os.path.join(work, "upload") if remote else os.path.join(out, job.name, "output")
    os.makedirs(target, exist_ok=True)
    model = artifacts.pack([os.path.join(t, "model") for t in trees], os.path.join(target, "model.tar.gz"))
    output = artifacts.pack(
        [os.path.join(t, "output", "data") for t in trees], os.path.join(target, "output.tar.gz")
    )
    for packed in (model, output):
        console.uploaded += packed.bytes_out
        give_back(packed.path)
        where = f"{remote}/{os.path.basename(packed.path)}" if remote else packed.path
        if remote:
            s3.upload(packed.path, where)
            os.unlink(packed.path)
        console.event(
            "uploaded",
            f"{where}: {packed.files} files, {packed.bytes_in} -> "
            f"{packed.bytes_out} bytes in {packed.seconds:.2f} s",
            path=where,
            files=packed.files,
            bytes_in=packed.bytes_in,
            bytes_out=packed.bytes_out,
            seconds=round(packed.seconds, 3),
            coded=packed.coded,
        )
    if remote:
        return f"{remote}/model.tar.gz"
    return "file://" + model.path if job.output_path.startswith("file://") else model.path


class WorkDirRefused(ValueError):
    """The work dir is not one root may write in and give back."""


def _caller() -> tuple[int, int] | None:
    """The user who ran us through sudo (SUDO_UID/SUDO_GID), whose files the results must be;
    None unless we are root (only root can give files away)."""
    if os.geteuid() != 0:
        return None
    try:
        return int(os.environ["SUDO_UID"]), int(os.environ["SUDO_GID"])
    except (KeyError, ValueError):
        return None


def claim(work: str) -> None:
    """Before the run writes anything, as root: the work dir is new, or an empty real directory of
    the caller's (SUDO_UID; root's without sudo), in a parent that no other user can rename things
    in. Anything else (another user's dir, one holding entries this run did not make, a link) is
    refused: root would write through what others planted, and give away what is not the run's.

    Raises:
        WorkDirRefused: naming the dir, what is wrong and the fix.
    """
    if os.geteuid() != 0:
        return
    caller = _caller()
    owner = caller[0] if caller is not None else 0
    fix = "give a new --work-dir (it is made), or an empty directory of yours"
    parent = os.path.dirname(os.path.abspath(work))
    while not os.path.lexists(parent):  # made by the run (the default is smsupervise-local/<name>)
        parent = os.path.dirname(parent)
    found = os.stat(parent)
    shared = found.st_mode & 0o022 and not found.st_mode & stat.S_ISVTX
    if found.st_uid not in (0, owner) or shared:
        raise WorkDirRefused(
            f"--work-dir {work}: its parent {parent} is owned by uid {found.st_uid} or writable by "
            f"others (mode {stat.S_IMODE(found.st_mode):o}): they could swap the work dir; {fix}"
        )
    try:
        found = os.lstat(work)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(found.st_mode) or not stat.S_ISDIR(found.st_mode):
        raise WorkDirRefused(f"--work-dir {work} is a link or not a directory; {fix}")
    if found.st_uid != owner:
        raise WorkDirRefused(f"--work-dir {work} is owned by uid {found.st_uid}, not by uid {owner}; {fix}")
    entries = os.listdir(work)
    if entries:
        raise WorkDirRefused(
            f"--work-dir {work} holds entries this run did not make ({entries[0]!r} and "
            f"{len(entries) - 1} more): root would write through them and give them away; {fix}"
        )


def give_back(path: str) -> None:
    """``path`` (not a link's target) to the sudo caller (nothing without sudo)."""
    caller = _caller()
    if caller is not None:
        os.chown(path, *caller, follow_symlinks=False)


def give_back_tree(root: str) -> None:
    """What the run made under ``root``, and ``root``, to the sudo caller (nothing without sudo).
    ``claim`` let the run start only in a new or empty dir of the caller's, so everything here that
    is not the caller's is the run's. Never through a link (each entry by its directory's
    descriptor, ``follow_symlinks=False``); contents before their directory, so the caller cannot
    change a directory while it is being given; a file with more than one link is not given (it
    may be another's file, linked in)."""
    caller = _caller()
    if caller is None:
        return
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for _, dirs, files, dir_fd in os.fwalk(dir_fd=top, topdown=False, follow_symlinks=False):
            for name in [*files, *dirs]:
                found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if found.st_uid == caller[0] or (not stat.S_ISDIR(found.st_mode) and found.st_nlink > 1):
                    continue
                os.chown(name, *caller, dir_fd=dir_fd, follow_symlinks=False)
        os.fchown(top, *caller)
    finally:
        os.close(top)
