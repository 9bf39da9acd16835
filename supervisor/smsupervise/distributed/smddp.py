"""sagemaker-training 5.1.4's SMDataParallel runner (``smdataparallel.py``): the master's mpirun
command line with ``smddprun`` before the program; the other hosts run sshd, as for MPI. Pure.

``mpirun --host H -np N --allow-run-as-root --tag-output --oversubscribe -mca ... -x
NCCL_SOCKET_IFNAME -x NCCL_DEBUG -x LD_LIBRARY_PATH -x PATH -x SMDATAPARALLEL_USE_<MODE>=1 -x
FI_PROVIDER=efa -x RDMAV_FORK_SAFE=1 [-x LD_PRELOAD=<gethostname>] <custom options> [EFA options]
[-x SMDATAPARALLEL_SERVER_ADDR/PORT -x SAGEMAKER_INSTANCE_TYPE] smddprun python -m mpi4py entry ARGS``.
"""

from __future__ import annotations

from collections.abc import Sequence

from smsupervise.distributed.efa import EFA_NCCL_INSTANCES, EFA_RDMA_INSTANCES
from smsupervise.distributed.mpi import custom_options
from smsupervise.distributed.topology import Topology, processes_per_host

FLAG = "sagemaker_distributed_dataparallel_enabled"
CUSTOM_OPTIONS = "sagemaker_distributed_dataparallel_custom_mpi_options"
SERVER_PORT = 7592


def command(topology: Topology, user_program: Sequence[str], ld_preload: str | None) -> tuple[str, ...]:
    """``SMDataParallelRunner._create_command`` + the program (``python -m mpi4py entry ARGS``)."""
    hosts = topology.distribution_hosts
    per_host = processes_per_host(topology)
    multi = len(hosts) > 1
    host_list = [f"{host}:{per_host}" for host in hosts] if multi else list(hosts)
    custom = custom_options(str(topology.framework.get(CUSTOM_OPTIONS) or ""))
    nic = topology.interface
    argv = ["mpirun", "--host", ",".join(host_list), "-np", str(per_host * len(hosts))]
    argv += ["--allow-run-as-root", "--tag-output", "--oversubscribe"]
    argv += ["-mca", "btl_tcp_if_include", nic, "-mca", "oob_tcp_if_include", nic]
    argv += ["-mca", "plm_rsh_no_tree_spawn", "1", "-mca", "pml", "ob1", "-mca", "btl", "^openib"]
    argv += ["-mca", "orte_abort_on_non_zero_status", "1", "-mca", "btl_vader_single_copy_mechanism", "none"]
    argv += ["-mca", "plm_rsh_num_concurrent", str(len(hosts))]
    argv += ["-x", f"NCCL_SOCKET_IFNAME={nic}", "-x", f"NCCL_DEBUG={custom.nccl_debug}"]
    argv += ["-x", "LD_LIBRARY_PATH", "-x", "PATH"]
    argv += ["-x", "SMDATAPARALLEL_USE_HOMOGENEOUS=1" if multi else "SMDATAPARALLEL_USE_SINGLENODE=1"]
    argv += ["-x", "FI_PROVIDER=efa", "-x", "RDMAV_FORK_SAFE=1"]
    if ld_preload:
        argv += ["-x", f"LD_PRELOAD={ld_preload}"]
    argv += custom.extra
    instance_type = str(topology.framework.get("sagemaker_instance_type") or topology.instance_type)
    if instance_type in EFA_NCCL_INSTANCES:
        argv += ["-x", "NCCL_PROTO=simple"]
    if instance_type in EFA_RDMA_INSTANCES:
        argv += ["-x", "FI_EFA_USE_DEVICE_RDMA=1"]
    if multi:
        argv += ["-x", f"SMDATAPARALLEL_SERVER_ADDR={topology.master}"]
        argv += ["-x", f"SMDATAPARALLEL_SERVER_PORT={SERVER_PORT}"]
        argv += ["-x", f"SAGEMAKER_INSTANCE_TYPE={instance_type}"]
    return (*argv, "smddprun", *user_program)
