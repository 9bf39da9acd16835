"""Differential: sagemaker-training 5.1.4's torchrun and mpirun command lines and the launcher's
environment, recorded on the same namespaced hosts, against smsupervise's. The only differences
are the deliberate ones in the README's table (``DELIBERATE`` below)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.distributed import jobs
from tests.distributed.conftest import needs_hosts
from tests.distributed.hosts import Cluster

HERE = Path(__file__).parent
TOOLKIT = Path(os.environ.get("SMSUPERVISE_TOOLKIT_VENV", HERE.parents[1] / ".venv-toolkit"))
pytestmark = [
    needs_hosts,
    pytest.mark.skipif(
        not (TOOLKIT / "bin" / "train").exists(),
        reason=f"sagemaker-training is not in {TOOLKIT} (`make toolkit`)",
    ),
]
# Variables that differ on purpose (README: distributed training, divergences).
# SMSUPERVISE_* are smsupervise's own (given or added); PATH and RECORD are this test's.
DELIBERATE = {"PYTHONPATH", "PET_LOG_DIR", "PET_REDIRECTS", "PATH", "RECORD"}
HYPERPARAMETERS = {"sagemaker_mpi_num_of_processes_per_host": 2, "epochs": 3, "lr": 0.5}


def _shims(root: Path) -> Path:
    shims = root / "shims"
    shims.mkdir(exist_ok=True)
    for name in ("torchrun", "mpirun"):
        shutil.copy(HERE / "recorder.py", shims / name)
    (shims / "smddprun").write_text('#!/bin/sh\nexec "$@"\n')  # installed: `which smddprun` finds it
    (shims / "smddprun").chmod(0o755)
    return shims


def _xla_standins(root: Path) -> Path:
    """Two GPUs (an nvidia-smi that lists them) and a torch_xla whose xla_spawn records its command
    line (``sys.orig_argv``), cwd and environment like the other stand-ins."""
    gpus = root / "shims" / "nvidia-smi"
    gpus.parent.mkdir(exist_ok=True)
    gpus.write_text("#!/bin/sh\necho 'GPU 0: Stand-in (UUID: GPU-0)'\necho 'GPU 1: Stand-in (UUID: GPU-1)'\n")
    gpus.chmod(0o755)
    package = root / "xla" / "torch_xla" / "distributed"
    package.mkdir(parents=True, exist_ok=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "xla_spawn.py").write_text(
        "import json, os, sys\n"
        "with open(os.environ['RECORD'], 'w') as out:\n"
        "    json.dump({'argv': sys.orig_argv, 'cwd': os.getcwd(), 'env': dict(os.environ)}, out)\n"
    )
    return root / "xla"


def _job(c: Cluster, flag: str) -> None:
    jobs.write_job(c, {flag: True, **HYPERPARAMETERS})
    for host in c.names:  # an EFA instance type, so that its variables are compared too
        path = c.base(host) / "input" / "config" / "resourceconfig.json"
        config = json.loads(path.read_text())
        config["current_instance_type"] = "ml.p4d.24xlarge"
        config["instance_groups"][0]["instance_type"] = "ml.p4d.24xlarge"
        path.write_text(json.dumps(config))


def _record(c: Cluster, host: str, who: str, runner: str, *, path: str = "", code: int = 0) -> dict[str, Any]:
    """Run the toolkit or smsupervise on ``host``; ``path``: more on PYTHONPATH (stand-ins).
    Returns the launcher's record; with ``code`` other than 0, the failure file instead."""
    record = c.root / f"{who}-{host}.json"
    shims = _shims(c.root)
    env = {
        "PATH": f"{shims}:{TOOLKIT / 'bin' if who == 'toolkit' else jobs.VENV_BIN}:/usr/sbin:/usr/bin:/bin",
        "HOME": "/root",
        "TRAINING_JOB_NAME": "job-diff",
        "RECORD": str(record),
        "LANG": "C.UTF-8",
    }
    if who == "toolkit":
        argv = [str(TOOLKIT / "bin" / "python"), str(HERE / "toolkit_driver.py"), runner]
        if path:
            env["PYTHONPATH"] = path
    else:
        env["SMSUPERVISE_PYTHON"] = str(TOOLKIT / "bin" / "python")  # the toolkit's sys.executable
        env["PYTHONPATH"] = ":".join(filter(None, [str(HERE.parents[1] / "supervisor"), path]))
        argv = [sys.executable, "-m", "smsupervise", "--log-level", "warning", "--fail-fast", "off", "train"]
    done = subprocess.run(c.command(host, argv), env=env, capture_output=True, timeout=80, check=False)
    assert done.returncode == code, (who, host, done.stdout[-2000:], done.stderr[-3000:])
    if code:
        return {"failure": (c.base(host) / "output" / "failure").read_text()}
    return json.loads(record.read_text())


def _differences(toolkit: dict[str, str], ours: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    keys = {k for k in set(toolkit) | set(ours) if not k.startswith("SMSUPERVISE_")} - DELIBERATE
    return {k: (toolkit.get(k), ours.get(k)) for k in sorted(keys) if toolkit.get(k) != ours.get(k)}


def test_torchrun_command_and_environment_equal_the_toolkits(cluster: Callable[..., Cluster]) -> None:
    """On both hosts: the same torchrun argv, cwd, and launcher environment (NCCL, EFA, SM_*)."""
    c = cluster(2)
    _job(c, "sagemaker_torch_distributed_enabled")
    for host in c.names:
        toolkit = _record(c, host, "toolkit", "torchrun")
        ours = _record(c, host, "smsupervise", "torchrun")
        assert ours["argv"] == toolkit["argv"]
        rank = str(c.names.index(host))
        assert toolkit["argv"][:11] == [
            "torchrun", "--nnodes", "2", "--nproc_per_node", "2",
            "--master_addr", "algo-1", "--master_port", "7777", "--node_rank", rank,
        ]  # fmt: skip
        assert ours["cwd"] == toolkit["cwd"] == "/opt/ml/code"
        assert _differences(toolkit["env"], ours["env"]) == {}
        assert toolkit["env"]["FI_EFA_USE_DEVICE_RDMA"] == "1"
        assert toolkit["env"]["NCCL_SOCKET_IFNAME"] == "eth0"


def test_mpirun_command_equals_the_toolkits(cluster: Callable[..., Cluster]) -> None:
    """On the master: the same mpirun argv (-x list, hosts, mpi4py), but for the gethostname shim."""
    c = cluster(2)
    _job(c, "sagemaker_mpi_enabled")
    listener = "import socket; s = socket.create_server(('', 22)); [s.accept()[0].close() for _ in range(50)]"
    c.popen("algo-2", ["python3", "-c", listener])  # stands for algo-2's sshd: the master waits for it
    toolkit = _record(c, "algo-1", "toolkit", "mpi")
    ours = _record(c, "algo-1", "smsupervise", "mpi")
    shim = [i for i, a in enumerate(toolkit["argv"]) if a.startswith("LD_PRELOAD=")]
    assert len(shim) == 1  # the toolkit's gethostname library: not installed beside smsupervise
    expected = toolkit["argv"][: shim[0] - 1] + toolkit["argv"][shim[0] + 1 :]
    assert ours["argv"] == expected
    assert ours["argv"][:5] == ["mpirun", "--host", "algo-1:2,algo-2:2", "-np", "4"]
    at = ours["argv"].index("mpi4py")
    assert ours["argv"][at - 1 : at + 2] == ["-m", "mpi4py", "train.py"]  # the script under mpi4py
    sm = {k: v for k, v in toolkit["env"].items() if k.startswith("SM_")}
    assert {k: v for k, v in ours["env"].items() if k.startswith("SM_")} == sm


def test_smdataparallel_command_equals_the_toolkits(cluster: Callable[..., Cluster]) -> None:
    """On the master, with smddprun installed: the same mpirun ... smddprun python -m mpi4py argv,
    but for the toolkit's gethostname shim (as for MPI)."""
    c = cluster(2)
    _job(c, "sagemaker_distributed_dataparallel_enabled")
    listener = "import socket; s = socket.create_server(('', 22)); [s.accept()[0].close() for _ in range(50)]"
    c.popen("algo-2", ["python3", "-c", listener])  # stands for algo-2's sshd: the master waits for it
    toolkit = _record(c, "algo-1", "toolkit", "smddp")
    ours = _record(c, "algo-1", "smsupervise", "smddp")
    shim = [i for i, a in enumerate(toolkit["argv"]) if a.startswith("LD_PRELOAD=")]
    assert len(shim) == 1
    assert ours["argv"] == toolkit["argv"][: shim[0] - 1] + toolkit["argv"][shim[0] + 1 :]
    assert ours["argv"][:5] == ["mpirun", "--host", "algo-1:2,algo-2:2", "-np", "4"]
    tail = ["smddprun", str(TOOLKIT / "bin" / "python"), "-m", "mpi4py", "train.py"]
    at = ours["argv"].index("smddprun")
    assert ours["argv"][at:] == [*tail, "--epochs", "3", "--lr", "0.5"]
    assert "SMDATAPARALLEL_SERVER_ADDR=algo-1" in ours["argv"]


def test_xla_spawn_command_and_environment_equal_the_toolkits(cluster: Callable[..., Cluster]) -> None:
    """With torch_xla installed (a stand-in) and two GPUs: the same xla_spawn command line, cwd and
    XRT/NCCL environment on both hosts."""
    c = cluster(2)
    _job(c, "sagemaker_pytorch_xla_multi_worker_enabled")
    standins = str(_xla_standins(c.root))
    for host in c.names:
        toolkit = _record(c, host, "toolkit", "xla", path=standins)
        ours = _record(c, host, "smsupervise", "xla", path=standins)
        assert ours["argv"] == toolkit["argv"]
        module = ["-m", "torch_xla.distributed.xla_spawn", "--num_gpus", "2", "train.py"]
        assert toolkit["argv"][:6] == [str(TOOLKIT / "bin" / "python"), *module]
        assert ours["cwd"] == toolkit["cwd"] == "/opt/ml/code"
        assert _differences(toolkit["env"], ours["env"]) == {}
        assert toolkit["env"]["XRT_HOST_ORDINAL"] == str(c.names.index(host))
        assert toolkit["env"]["XRT_MESH_SERVICE_ADDRESS"] == "algo-1:53957"


def test_xla_without_torch_xla_is_refused_naming_it(cluster: Callable[..., Cluster]) -> None:
    """The negative twin: the same job with no torch_xla importable: exit 2 before anything runs,
    and a failure file that names the module and the fix."""
    c = cluster(2)
    _job(c, "sagemaker_pytorch_xla_multi_worker_enabled")
    _xla_standins(c.root)  # the GPUs, but torch_xla is left off PYTHONPATH
    failure = _record(c, "algo-1", "smsupervise", "xla", code=2)["failure"]
    assert "cannot import torch_xla.distributed.xla_spawn" in failure, failure
    assert "sagemaker_pytorch_xla_multi_worker_enabled" in failure
    assert not (c.root / "smsupervise-algo-1.json").exists()  # nothing was launched


def test_the_comparison_can_fail(cluster: Callable[..., Cluster]) -> None:
    """The negative twin: algo-1's toolkit record against algo-2's smsupervise record differs in
    --node_rank and SM_CURRENT_HOST."""
    c = cluster(2)
    _job(c, "sagemaker_torch_distributed_enabled")
    toolkit = _record(c, "algo-1", "toolkit", "torchrun")
    ours = _record(c, "algo-2", "smsupervise", "torchrun")
    assert ours["argv"] != toolkit["argv"]
    assert "SM_CURRENT_HOST" in _differences(toolkit["env"], ours["env"])
