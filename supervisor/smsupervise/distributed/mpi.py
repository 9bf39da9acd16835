"""sagemaker-training 5.1.4's MPI runner (``mpi.py``): the master's mpirun argv, exactly.

The master host runs ``mpirun`` with the toolkit's options, ``-x`` for every job variable and
``<python> -m mpi4py <entry> ARGS``; every host runs ``/usr/sbin/sshd -D`` so that mpirun can start
``orted`` there. Pure: the caller supplies the job variables (in the toolkit's order) and the
interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from smsupervise.distributed.efa import EFA_NCCL_INSTANCES, EFA_RDMA_INSTANCES
from smsupervise.distributed.topology import Topology, processes_per_host
from smsupervise.distributed.torchrun import entry_type

SSHD = "/usr/sbin/sshd"
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class CustomOptions(NamedTuple):
    """``sagemaker_mpi_custom_mpi_options``: ``--NCCL_DEBUG X`` is taken out, the rest appended."""

    nccl_debug: str
    extra: tuple[str, ...]


def custom_options(text: str) -> CustomOptions:
    """The toolkit's ``_parse_custom_mpi_options`` (argparse ``parse_known_args`` on ``split()``)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--NCCL_DEBUG", default="INFO", type=str)
    known, extra = parser.parse_known_args(text.split())
    return CustomOptions(known.NCCL_DEBUG, tuple(extra))


def _modelparallel(topology: Topology, env: Mapping[str, str], smddpmprun: bool) -> list[str]:
    """``_modelparallel_environment_command``: only when SM_HP_MP_PARAMETERS is set and not empty."""
    raw = env.get("SM_HP_MP_PARAMETERS")
    if not raw or raw == "{}":
        return []
    argv: list[str] = []
    version = env.get("SM_DLC_TORCH_VERSION")
    if version:
        argv += ["-x", "NCCL_PROTO=simple"]
        with contextlib.suppress(ValueError):
            if int(version.split(".")[0]) > 1:
                argv += ["-x", "NCCL_ALGO=ring"]
    backend = json.loads(raw).get("ddp_dist_backend", "auto")
    if backend == "auto" and smddpmprun:
        argv += ["smddpmprun", "-i", topology.instance_type, "--allow-bypass"]
    return argv


def program(python: str, entry: str, args: Sequence[str], code_dir: str) -> list[str]:
    """``ProcessRunner._create_command`` with ``_python_command() + ['-m', 'mpi4py']``."""
    kind = entry_type(code_dir, entry)
    if kind == "package":
        return [python, "-m", "mpi4py", "-m", re.sub(r"\.py$", "", entry), *args]
    if kind == "program":
        return [python, "-m", "mpi4py", entry, *args]
    quoted = " ".join(shlex.quote(arg) for arg in args)
    return ["/bin/sh", "-c", f"./{shlex.quote(entry)} {quoted}"]


def command(  # noqa: PLR0917 - the toolkit's MasterRunner takes as many
    topology: Topology,
    job_variables: Sequence[str],
    env: Mapping[str, str],
    user_program: Sequence[str],
    ld_preload: str | None,
    smddpmprun: bool = False,
) -> tuple[str, ...]:
    """``MasterRunner._create_command``. ``job_variables``: the SM_* names (then PYTHONPATH), in order.

    ``ld_preload``: the toolkit's gethostname shim when it is installed; without it the option is
    left out (see the README's divergences).
    """
    hosts = topology.distribution_hosts
    per_host = processes_per_host(topology)
    wanted = topology.framework.get("sagemaker_mpi_num_processes")
    count = int(wanted) if wanted else per_host * len(hosts)  # type: ignore[call-overload]
    host_list = list(hosts) if per_host == 1 else [f"{host}:{per_host}" for host in hosts]
    custom = custom_options(str(topology.framework.get("sagemaker_mpi_custom_mpi_options") or ""))
    nic = topology.interface
    argv = ["mpirun", "--host", ",".join(host_list), "-np", str(count), "--allow-run-as-root"]
    argv += ["--display-map", "--tag-output", "-mca", "btl_tcp_if_include", nic]
    argv += ["-mca", "oob_tcp_if_include", nic, "-mca", "plm_rsh_no_tree_spawn", "1"]
    argv += ["-bind-to", "none", "-map-by", "slot", "-mca", "pml", "ob1", "-mca", "btl", "^openib"]
    argv += ["-mca", "orte_abort_on_non_zero_status", "1", "-mca", "btl_vader_single_copy_mechanism", "none"]
    argv += [
        "-x",
        "NCCL_MIN_NRINGS=4",
        "-x",
        f"NCCL_SOCKET_IFNAME={nic}",
        "-x",
        f"NCCL_DEBUG={custom.nccl_debug}",
    ]
    argv += ["-x", "LD_LIBRARY_PATH", "-x", "PATH"]
    if ld_preload:
        argv += ["-x", f"LD_PRELOAD={ld_preload}"]
    argv += custom.extra
    if topology.instance_type in EFA_NCCL_INSTANCES:
        argv += ["-x", "FI_PROVIDER=efa", "-x", "NCCL_PROTO=simple"]
    if topology.instance_type in EFA_RDMA_INSTANCES:
        argv += ["-x", "FI_EFA_USE_DEVICE_RDMA=1"]
    for credential in CREDENTIALS:
        if credential in env:
            argv += ["-x", credential]
    for name in job_variables:
        argv += ["-x", name]
    argv += _modelparallel(topology, env, smddpmprun)
    return (*argv, *user_program)
