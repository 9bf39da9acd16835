"""sagemaker-training 5.1.4's PyTorch/XLA runner (``pytorch_xla.py``): the same argv and variables.

``<python> -m torch_xla.distributed.xla_spawn --num_gpus G entry ARGS`` on every distribution host,
with the XRT cluster variables (this host's ordinal among the distribution hosts, every worker's
address, the master's mesh service when there is more than one host) and NCCL's. GPUs only; a
Python package or a non-``.py`` entry point is refused with the toolkit's words. Pure: whether
``torch_xla`` is installed is looked at by ``sagemaker.prepare`` (it runs the job's Python).
"""

from __future__ import annotations

from collections.abc import Sequence

from smsupervise.distributed.topology import Topology
from smsupervise.distributed.torchrun import entry_type
from smsupervise.errors import ConfigError

MODULE = "torch_xla.distributed.xla_spawn"
MESH_SERVICE_PORT = 53957
WORKER_PORT = 43857
FLAG = "sagemaker_pytorch_xla_multi_worker_enabled"


def variables(topology: Topology) -> dict[str, str]:
    """What the toolkit's ``_setup`` puts into the environment before xla_spawn starts."""
    hosts = topology.distribution_hosts
    gpus = str(topology.num_gpus)
    env = {
        "NCCL_DEBUG": "info",
        "NCCL_PROTO": "simple",
        "FI_EFA_USE_DEVICE_RDMA": "1",
        "OFI_NCCL_NIC_DUP_CONNS": gpus,
        "XRT_HOST_ORDINAL": str(hosts.index(topology.current_host)),
        "XRT_SHARD_WORLD_SIZE": str(len(hosts)),
        "XRT_WORKERS": "|".join(f"localservice:{i};{host}:{WORKER_PORT}" for i, host in enumerate(hosts)),
        "GPU_NUM_DEVICES": gpus,
    }
    if len(hosts) > 1:
        env["XRT_MESH_SERVICE_ADDRESS"] = f"{topology.master}:{MESH_SERVICE_PORT}"
    return env


def command(
    topology: Topology, python: str, entry: str, args: Sequence[str], code_dir: str
) -> tuple[str, ...]:
    """The toolkit's ``_create_command``; raises ``ConfigError`` where it raises its configuration errors."""
    if topology.num_gpus <= 0:
        raise ConfigError(
            "hyperparameters.json",
            FLAG,
            "Distributed training through PT-XLA is only supported for GPUs (none were found)",
            "run on a GPU instance type, or use sagemaker_torch_distributed_enabled (torchrun)",
        )
    kind = entry_type(code_dir, entry)
    if kind != "program":
        what = (
            "is not supported for Python packages"
            if kind == "package"
            else "is only supported for Python scripts"
        )
        raise ConfigError(
            "hyperparameters.json",
            "sagemaker_program",
            f"Distributed Training through PT-XLA {what} ({entry!r})",
            "Please use a python script as the entry-point",
        )
    return (python, "-m", MODULE, "--num_gpus", str(topology.num_gpus), entry, *args)
