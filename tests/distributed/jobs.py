"""Set up a distributed job on namespaced hosts and run smsupervise (or the toolkit) on each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import HELPERS, ROOT
from tests.distributed.hosts import Cluster

VENV_BIN = str(Path(sys.executable).parent)


def write_job(c: Cluster, hyperparameters: dict[str, Any], script: Path = HELPERS / "ddp_train.py") -> None:
    """Every host's /opt/ml: config files as SageMaker writes them and the script as code/train.py."""
    for index, host in enumerate(c.names, start=1):
        base = c.base(host)
        config = base / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        resource = {
            "current_host": host,
            "current_instance_type": "ml.m5.xlarge",
            "current_group_name": "homogeneousCluster",
            "hosts": c.names,
            "instance_groups": [
                {
                    "instance_group_name": "homogeneousCluster",
                    "instance_type": "ml.m5.xlarge",
                    "hosts": c.names,
                }
            ],
            "network_interface_name": "eth0",
        }
        (config / "resourceconfig.json").write_text(json.dumps(resource))
        (config / "inputdataconfig.json").write_text("{}")
        hps = {"sagemaker_program": "train.py", **hyperparameters}
        (config / "hyperparameters.json").write_text(json.dumps({k: json.dumps(v) for k, v in hps.items()}))
        code = base / "code"
        code.mkdir(exist_ok=True)
        shutil.copy(script, code / "train.py")
        assert index  # hosts are numbered from 1


def environment(**extra: str) -> dict[str, str]:
    """What each host's smsupervise starts with: our venv first on PATH (torchrun, python3)."""
    env = {
        "PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "PYTHONPATH": str(ROOT / "supervisor"),
        "TRAINING_JOB_NAME": "job-dist",
        "SMSUPERVISE_PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "eth0",
    }
    env.update(extra)
    return env


def start_all(
    c: Cluster, *flags: str, env: dict[str, str] | None = None
) -> dict[str, subprocess.Popen[bytes]]:
    """smsupervise train on every host, output to <host>.out/.err files under the cluster root."""
    started = {}
    for host in c.names:
        argv = [sys.executable, "-m", "smsupervise", *flags, "train"]
        with (c.root / f"{host}.out").open("wb") as out, (c.root / f"{host}.err").open("wb") as err:
            started[host] = c.popen(host, argv, env=env or environment(), stdout=out, stderr=err)
    return started


def events(c: Cluster, host: str) -> list[dict[str, Any]]:
    lines = (c.root / f"{host}.err").read_bytes().splitlines()
    return [json.loads(x) for x in lines if x.startswith(b"{") and b'"logger":"smsupervise"' in x]


def records(c: Cluster, host: str, stream: str = "out") -> list[dict[str, Any]]:
    lines = (c.root / f"{host}.{stream}").read_bytes().splitlines()
    return [json.loads(x) for x in lines if x.startswith(b"{") and b'"logger":"smsupervise"' not in x]


def failure(c: Cluster, host: str) -> str:
    path = c.base(host) / "output" / "failure"
    return path.read_text() if path.exists() else ""


def wait_all(started: dict[str, subprocess.Popen[bytes]], timeout: float) -> dict[str, int]:
    return {host: p.wait(timeout) for host, p in started.items()}


def tail(c: Cluster, host: str) -> str:
    """For a failed assertion's message (evaluated only then): ``host``'s last 3000 characters, and
    every host's whole log printed, which pytest shows uncut under "Captured stdout call" (a host
    often fails because of another, and pytest shortens long messages)."""
    for name in c.names:
        path = c.root / f"{name}.err"
        whole = os.fsdecode(path.read_bytes()) if path.exists() else "(no log)"
        print(f"===== {name}: {path}\n{whole}")
    return os.fsdecode((c.root / f"{host}.err").read_bytes()[-3000:])
