"""Build /opt/ml-style trees for tests: config files, channels, and a source directory whose
entry point dumps what it sees (argv, cwd, SM_* variables) as JSON."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

DUMP_PY = """\
import json, os, sys
keys = sorted(k for k in os.environ if k.startswith("SM_") or k in
              ("SAGEMAKER_JOB_NAME", "CURRENT_HOST", "SAGEMAKER_REGION", "PYTHONPATH"))
json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": {k: os.environ[k] for k in keys}},
          open(os.environ["DUMP"], "w"), sort_keys=True)
"""
DUMP_SH = """#!/bin/sh
python3 - "$@" <<'PY'
import json, os, sys
keys = sorted(k for k in os.environ if k.startswith("SM_") or k in
              ("SAGEMAKER_JOB_NAME", "CURRENT_HOST", "SAGEMAKER_REGION"))
json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": {k: os.environ[k] for k in keys}},
          open(os.environ["DUMP"], "w"), sort_keys=True)
PY
"""

EVERY_TYPE = {  # hyperparameters.json values as the SDK writes them (JSON-encoded strings), and raw ones
    "epochs": "10",
    "lr": "0.001",
    "sci": "1e-3",
    "name": '"my run #1"',
    "adam": '"adam"',
    "flag": "true",
    "off": "false",
    "nothing": "null",
    "layers": "[64, 32, 16]",
    "sched": '{"type": "cosine", "warmup": 5}',
    "raw": "not-json text",
    "True_text": "True",
    "x": "0.5",
    "learning-rate": "0.1",
    "Upper": "1",
    "nan": "NaN",
    "big": "123456789012345678901234567890",
    "empty": '""',
    "unicode": '"\\u00e9t\\u00e9"',
    "sagemaker_job_name": '"job-1"',
    "sagemaker_region": '"us-west-2"',
    "sagemaker_container_log_level": "20",
    "sagemaker_instance_type": '"ml.m5.xlarge"',
    "sagemaker_mpi_enabled": "false",
    "_tuning_objective_metric": '"loss"',
}


def resource_config(
    hosts: int, current: int = 1, groups: bool = True, hetero: bool = False
) -> dict[str, Any]:
    """``hetero``: two instance groups, ``cpu`` (every host but the last) and ``gpu`` (the last)."""
    names = [f"algo-{i}" for i in range(1, hosts + 1)]
    config: dict[str, Any] = {
        "current_host": names[current - 1],
        "hosts": names,
        "current_instance_type": "ml.m5.xlarge",
        "network_interface_name": "eth0",
    }
    if hetero:
        config["current_group_name"] = "gpu" if current == hosts else "cpu"
        config["instance_groups"] = [
            {"instance_group_name": "cpu", "instance_type": "ml.m5.xlarge", "hosts": names[:-1]},
            {"instance_group_name": "gpu", "instance_type": "ml.p3.2xlarge", "hosts": names[-1:]},
        ]
    elif groups:
        config["current_group_name"] = "homogeneousCluster"
        config["instance_groups"] = [
            {"instance_group_name": "homogeneousCluster", "instance_type": "ml.m5.xlarge", "hosts": names}
        ]
    return config


def build(
    root: Path,
    *,
    hyperparameters: dict[str, str],
    entry: str = "train.py",
    hosts: int = 1,
    current: int = 1,
    channels: dict[str, str] | None = None,
    source: str = "dir",
    package: bool = False,
    groups: bool = True,
    hetero: bool = False,
) -> Path:
    """A base dir under ``root`` plus a source dir/tarball beside it; returns the base dir."""
    base = root / "ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "code").mkdir()
    src = root / "src"
    src.mkdir()
    if entry.endswith(".sh"):
        (src / entry).write_text(DUMP_SH)
    else:
        (src / entry).write_text(DUMP_PY)
    if package:
        (src / "setup.py").write_text(
            "from setuptools import setup\nsetup(name='dumpjob', version='1.0', "
            f"py_modules=['{entry.removesuffix('.py')}'])\n"
        )
    location = str(src)
    if source == "tar.gz":
        tarball = root / "sourcedir.tar.gz"
        with tarfile.open(tarball, "w:gz") as archive:
            for item in sorted(src.iterdir()):
                archive.add(item, arcname=item.name)
        location = str(tarball)
    hps = {
        **hyperparameters,
        "sagemaker_program": json.dumps(entry),
        "sagemaker_submit_directory": json.dumps(location),
    }
    config = base / "input" / "config"
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    (config / "resourceconfig.json").write_text(json.dumps(resource_config(hosts, current, groups, hetero)))
    channels = channels if channels is not None else {"train": "File"}
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {
                name: {"TrainingInputMode": mode, "S3DistributionType": "FullyReplicated"}
                for name, mode in channels.items()
            }
        )
    )
    for name in channels:
        (base / "input" / "data" / name).mkdir(parents=True, exist_ok=True)
    return base


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "job"


def example(root: Path, **extra_hyperparameters: str) -> Path:
    """The bundled example job (examples/job) as an /opt/ml tree under ``root``, as `make demo` builds it."""
    base = root / "ml"
    for sub in ("input/config", "input/data", "code", "model", "output"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLE / "data", base / "input" / "data", dirs_exist_ok=True)
    for config in (EXAMPLE / "config").glob("*.json"):
        text = (
            config.read_text().replace("@SOURCE_DIR@", str(EXAMPLE / "src")).replace("@BASE_DIR@", str(base))
        )
        (base / "input" / "config" / config.name).write_text(text)
    if extra_hyperparameters:
        path = base / "input" / "config" / "hyperparameters.json"
        hps = json.loads(path.read_text())
        hps.update(extra_hyperparameters)
        path.write_text(json.dumps(hps))
    return base
