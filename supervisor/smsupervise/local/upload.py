"""The job's results handed over: ``model.tar.gz`` and ``output.tar.gz`` packed from every host's
tree (``artifacts``) into ``OutputDataConfig.S3OutputPath`` (a directory, ``file://``, or ``s3://``
through the work dir), and everything we leave owned by the user who ran us through sudo.
"""

from __future__ import annotations

import os

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


def _caller() -> tuple[int, int] | None:
    """The user who ran us through sudo (SUDO_UID/SUDO_GID), whose files the results must be."""
    try:
        return int(os.environ["SUDO_UID"]), int(os.environ["SUDO_GID"])
    except (KeyError, ValueError):
        return None


def give_back(path: str) -> None:
    """``path`` to the sudo caller (nothing without sudo)."""
    caller = _caller()
    if caller is not None:
        os.chown(path, *caller)


def give_back_tree(root: str) -> None:
    """Everything under ``root``, and ``root``, to the sudo caller (nothing without sudo)."""
    caller = _caller()
    if caller is None:
        return
    for parent, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            os.lchown(os.path.join(parent, name), *caller)
    os.chown(root, *caller)
