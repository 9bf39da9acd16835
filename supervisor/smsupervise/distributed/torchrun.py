"""sagemaker-training 5.1.4's torchrun runner (``torch_distributed.py``): the same argv and variables.

``torchrun --nnodes N --nproc_per_node P [--master_addr M --master_port 7777 --node_rank R] entry ARGS``
(the multi-node options only when N > 1), ``neuron_parallel_compile`` first when
``RUN_NEURON_PARALLEL_COMPILE=1``; ``NCCL_SOCKET_IFNAME``, ``NCCL_PROTO=simple`` and the EFA variables
by instance type. A Python package or a non-``.py`` entry point is refused with the toolkit's words.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from smsupervise.distributed.efa import EFA_NCCL_INSTANCES, EFA_RDMA_INSTANCES
from smsupervise.distributed.topology import Topology, processes_per_host
from smsupervise.errors import ConfigError

MASTER_PORT = "7777"
HYPERPARAMETERS = "hyperparameters.json"


def entry_type(code_dir: str, entry: str) -> str:
    """The toolkit's ``_entry_point_type.get``: ``command``, ``package`` or ``program``."""
    if entry.endswith(".sh"):
        return "command"
    if os.path.isdir(code_dir) and "setup.py" in os.listdir(code_dir):
        return "package"
    return "program" if entry.endswith(".py") else "command"


def variables(topology: Topology) -> dict[str, str]:
    """What the toolkit's ``_setup`` puts into the environment before torchrun starts."""
    env: dict[str, str] = {}
    if topology.instance_type in EFA_NCCL_INSTANCES:
        env["FI_PROVIDER"] = "efa"
    if topology.instance_type in EFA_RDMA_INSTANCES:
        env["FI_EFA_USE_DEVICE_RDMA"] = "1"
        env["RDMAV_FORK_SAFE"] = "1"
    env["NCCL_SOCKET_IFNAME"] = topology.interface
    env["NCCL_PROTO"] = "simple"
    return env


def command(
    topology: Topology, entry: str, args: Sequence[str], code_dir: str, env: Mapping[str, str]
) -> tuple[str, ...]:
    """The toolkit's ``_create_command``; raises ``ConfigError`` where it raises ``ClientError``."""
    kind = entry_type(code_dir, entry)
    if kind == "package":
        raise ConfigError(
            HYPERPARAMETERS,
            "sagemaker_program",
            "Python packages are not supported for torch_distributed (the source directory has a setup.py)",
            "Please use a python script as the entry-point",
        )
    if kind != "program":
        raise ConfigError(
            HYPERPARAMETERS,
            "sagemaker_program",
            f"Unsupported entry point type for torch_distributed: {entry!r}",
            "use a .py script as the entry point",
        )
    argv = ["neuron_parallel_compile"] if env.get("RUN_NEURON_PARALLEL_COMPILE") == "1" else []
    hosts = topology.distribution_hosts
    argv += ["torchrun", "--nnodes", str(len(hosts)), "--nproc_per_node", str(processes_per_host(topology))]
    if len(hosts) > 1:
        argv += ["--master_addr", topology.master, "--master_port", MASTER_PORT]
        argv += ["--node_rank", str(topology.node_rank)]
    return (*argv, entry, *args)
