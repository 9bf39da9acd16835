"""One host's ``/opt/ml`` tree, with the four config files written as the platform writes them.

``resourceconfig.json`` has every field the service sets (``current_host``, ``current_instance_type``,
``current_group_name``, ``hosts``, ``instance_groups``, ``network_interface_name``);
``inputdataconfig.json`` one entry per channel (FastFile is written as ``File``, as the service
does: contract.md section 4); ``hyperparameters.json`` the request's map as given;
``checkpointconfig.json`` only with a CheckpointConfig. ``base`` is the tree's path as the job sees
it (``/opt/ml`` in a mount namespace, the tree itself in ``basedir`` mode).
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from smsupervise.local.job import TrainingJob

GROUP = "homogeneousCluster"
DIRS = ("input/config", "input/data", "code", "model", "output/data", "output/intermediate", "checkpoints")


def resource_config(job: TrainingJob, host: str) -> dict[str, Any]:
    """``resourceconfig.json`` for ``host`` (one homogeneous instance group, as the service writes)."""
    hosts = [f"algo-{k}" for k in range(1, job.instance_count + 1)]
    return {
        "current_host": host,
        "current_instance_type": job.instance_type,
        "current_group_name": GROUP,
        "hosts": hosts,
        "instance_groups": [
            {"instance_group_name": GROUP, "instance_type": job.instance_type, "hosts": hosts}
        ],
        "network_interface_name": "eth0",
    }


def input_data_config(job: TrainingJob) -> dict[str, dict[str, str]]:
    """``inputdataconfig.json``: each channel's mode, distribution, record wrapper and content type."""
    config = {}
    for ch in job.channels:
        entry = {
            "TrainingInputMode": "File" if ch.input_mode == "FastFile" else ch.input_mode,
            "S3DistributionType": ch.distribution,
            "RecordWrapperType": ch.record_wrapper,
        }
        if ch.content_type:
            entry["ContentType"] = ch.content_type
        if ch.compression != "None":
            entry["CompressionType"] = ch.compression
        config[ch.name] = entry
    return config


def checkpoint_local_path(job: TrainingJob, base: str) -> str | None:
    """The checkpoint dir as the job sees it (LocalPath, moved under ``base`` in basedir mode)."""
    if job.checkpoint is None:
        return None
    relative = os.path.relpath(job.checkpoint.local_path, "/opt/ml")
    return os.path.join(base, relative)


def _write(path: str, value: object) -> None:
    with open(path, "wb") as handle:
        handle.write(orjson.dumps(value, option=orjson.OPT_INDENT_2))


def write(job: TrainingJob, tree: str, host: str, base: str) -> None:
    """Create ``tree`` (the host's /opt/ml) with its directories and config files."""
    for name in DIRS:
        os.makedirs(os.path.join(tree, name), exist_ok=True)
    config = os.path.join(tree, "input", "config")
    _write(os.path.join(config, "hyperparameters.json"), dict(job.hyperparameters))
    _write(os.path.join(config, "inputdataconfig.json"), input_data_config(job))
    _write(os.path.join(config, "resourceconfig.json"), resource_config(job, host))
    if job.checkpoint is not None:
        local = checkpoint_local_path(job, base)
        _write(
            os.path.join(config, "checkpointconfig.json"), {"LocalPath": local, "S3Uri": job.checkpoint.uri}
        )
        os.makedirs(os.path.join(tree, os.path.relpath(job.checkpoint.local_path, "/opt/ml")), exist_ok=True)
