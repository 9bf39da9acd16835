"""Which launcher a job asks for, and its command: the runner choice of the toolkits, in one place.

Priority as the PyTorch toolkit's (``training.py``): ``sagemaker_mpi_enabled`` >
``sagemaker_pytorch_ddp_enabled`` > ``sagemaker_torch_distributed_enabled`` >
``sagemaker_distributed_dataparallel_enabled`` > ``sagemaker_pytorch_xla_multi_worker_enabled``.
MPI applies only when this host's instance group is a distribution group (``trainer.py``). Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, NamedTuple

from smsupervise.distributed import mpi, smddp, torchrun, xla
from smsupervise.distributed.topology import Topology, processes_per_host
from smsupervise.errors import ConfigError

RunnerKind = Literal["torchrun", "mpi-master", "mpi-worker", "xla"]
HYPERPARAMETERS = "hyperparameters.json"

# Runners that need SageMaker-only software, with the program that must be on PATH.
NEEDS_SOFTWARE = {
    "sagemaker_pytorch_ddp_enabled": ("SMDataParallel (smdistributed.dataparallel)", "smddprun"),
    "sagemaker_distributed_dataparallel_enabled": ("SMDataParallel (smdistributed.dataparallel)", "smddprun"),
}


class Launch(NamedTuple):
    """The launcher this host runs, and what it needs."""

    runner: RunnerKind
    argv: tuple[str, ...]
    env: dict[str, str]  # variables added to the job's environment
    agent: str  # the program that starts the ranks: torchrun, mpirun, sshd
    processes_per_host: int
    node_rank: int
    world_size: int


class JobFacts(NamedTuple):
    """What the plan knows about the job that the launchers need."""

    entry: str
    args: tuple[str, ...]
    code_dir: str
    python: str
    job_variables: tuple[str, ...]  # SM_* names in the toolkit's order, then PYTHONPATH
    current_group: str
    distribution_groups: tuple[str, ...]


def _enabled(topology: Topology, flag: str) -> bool:
    return topology.framework.get(flag) is True


def choose(
    topology: Topology,
    job: JobFacts,
    env: Mapping[str, str],
    on_path: Mapping[str, bool],
    ld_preload: str | None = None,
) -> Launch | None:
    """The launch for this host, or None for the plain process runner.

    ``on_path`` says which of ``smddprun``/``smddpmprun`` exist. Raises ``ConfigError``
    (exit 2) for a runner whose software is missing or an entry point the toolkit refuses.
    """
    per_host = processes_per_host(topology)
    world = per_host * len(topology.distribution_hosts)
    if _enabled(topology, "sagemaker_mpi_enabled") and job.current_group in job.distribution_groups:
        smddpmprun = bool(on_path.get("smddpmprun"))
        return _mpi(topology, job, lambda program: mpi.command(
            topology, job.job_variables, env, program, ld_preload, smddpmprun))  # fmt: skip
    for flag in ("sagemaker_pytorch_ddp_enabled",):
        _refuse_missing(topology, flag, on_path)
    if _enabled(topology, "sagemaker_torch_distributed_enabled"):
        argv = torchrun.command(topology, job.entry, job.args, job.code_dir, env)
        variables = torchrun.variables(topology)
        return Launch("torchrun", argv, variables, "torchrun", per_host, topology.node_rank, world)
    if _enabled(topology, smddp.FLAG):
        _refuse_missing(topology, smddp.FLAG, on_path)
        return _mpi(topology, job, lambda program: smddp.command(topology, program, ld_preload))
    if _enabled(topology, xla.FLAG):
        argv = xla.command(topology, job.python, job.entry, job.args, job.code_dir)
        variables = xla.variables(topology)
        return Launch("xla", argv, variables, "xla_spawn", per_host, topology.node_rank, world)
    return None


def _mpi(topology: Topology, job: JobFacts, master: Callable[[list[str]], tuple[str, ...]]) -> Launch:
    """An mpirun launch: the master runs ``master(program)``, every other host sshd (its ranks come
    from the master's mpirun)."""
    per_host = processes_per_host(topology)
    world = per_host * len(topology.distribution_hosts)
    if not topology.is_master:
        return Launch("mpi-worker", (mpi.SSHD, "-D"), {}, "sshd", per_host, topology.node_rank, world)
    argv = master(mpi.program(job.python, job.entry, job.args, job.code_dir))
    return Launch("mpi-master", argv, {}, "mpirun", per_host, topology.node_rank, world)


def _refuse_missing(topology: Topology, flag: str, on_path: Mapping[str, bool]) -> None:
    """Exit 2 naming the missing launcher; when it is installed, say that smsupervise does not run
    it (``sagemaker_pytorch_ddp_enabled``) or return (SMDataParallel: it is started)."""
    if not _enabled(topology, flag):
        return
    what, program = NEEDS_SOFTWARE[flag]
    if not on_path.get(program):
        raise ConfigError(
            HYPERPARAMETERS,
            flag,
            f"{what} is requested but `{program}` is not installed in this image",
            "use a SageMaker framework image that has it, or sagemaker_torch_distributed_enabled "
            "(torchrun) instead",
        )
    if flag == smddp.FLAG:
        return
    raise ConfigError(
        HYPERPARAMETERS,
        flag,
        f"{what} is installed (`{program}`) but smsupervise does not start it yet",
        "use sagemaker_torch_distributed_enabled (torchrun) or sagemaker_mpi_enabled, or set "
        f"SMSUPERVISE_TRAIN to your own `{program}` command line",
    )
