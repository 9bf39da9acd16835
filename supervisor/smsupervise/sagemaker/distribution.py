"""The distributed part of script mode: the cluster options from the settings, the launcher in the
entry point's place, and the notes that say which runner was chosen (pure: ``decide`` calls them);
and whether a launcher's software is installed (one probe: ``prepare`` calls it)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from smsupervise.errors import ConfigError
from smsupervise.sagemaker import probe, runners
from smsupervise.sagemaker.notes import Note

if TYPE_CHECKING:
    from smsupervise.distributed.cluster import ClusterOptions, ClusterPlan
    from smsupervise.distributed.launchers import Launch
    from smsupervise.sagemaker.script import Script
    from smsupervise.settings import Settings


def cluster_options(settings: Settings, env: Mapping[str, str]) -> ClusterOptions:
    """--fail-fast, --cluster-port, --peer-wait, --ranks, --peer-timeout; and no peer wait with
    SM_STUDIO_LOCAL_MODE=true (the toolkit skips its DNS wait)."""
    from smsupervise.distributed.cluster import ClusterOptions  # noqa: PLC0415 - train mode only

    local_mode = env.get("SM_STUDIO_LOCAL_MODE", "False").lower() == "true"
    return ClusterOptions(
        settings.fail_fast,
        settings.cluster_port,
        settings.peer_wait,
        settings.ranks,
        not local_mode,
        settings.peer_timeout,
    )


def wire(
    script: Script, runner: runners.Runner, python: str, tmpdir: str
) -> tuple[runners.Runner, ClusterPlan | None, tuple[Note, ...]]:
    """torchrun or mpirun in place of the entry point, when the job asks for it (the toolkit's
    rule): the runner (with the launcher in place), the cluster part of the plan, and its notes."""
    from smsupervise.distributed import cluster, launchers  # noqa: PLC0415 - train mode only

    assert script.cluster_options is not None
    env = script.env
    props = json.loads(env.get("SM_TRAINING_ENV") or "{}")
    job = launchers.JobFacts(
        entry=script.entry,
        args=script.args,
        code_dir=script.code_dir,
        python=python,
        job_variables=(*script.job_variables, "PYTHONPATH"),
        current_group=str(props.get("current_instance_group", "")),
        distribution_groups=tuple(props.get("distribution_instance_groups") or ()),
    )
    on_path = {name: probe.on_path(name, env) is not None for name in ("smddprun", "smddpmprun")}
    launcher_env: dict[str, str] = {}
    planned = cluster.decide(
        env,
        launcher_env,
        job,
        script.cluster_options,
        on_path,
        tmpdir,
        script.run_id,
        cluster.gethostname_shim(),
    )
    if planned is not None and planned.launch is not None:
        runner = runners.with_launcher(runner, planned.launch.argv, launcher_env)
    return runner, planned, runner_notes(env, planned)


def runner_notes(env: Mapping[str, str], planned: ClusterPlan | None) -> tuple[Note, ...]:
    """``runner_chosen`` for a distributed launcher; ``runner_not_supported`` for flags we do not act on."""
    launch = planned.launch if planned is not None else None
    if launch is not None:
        chosen = {
            "runner": launch.runner,
            "agent": launch.agent,
            "argv": list(launch.argv),
            "processes_per_host": launch.processes_per_host,
            "node_rank": launch.node_rank,
            "world_size": launch.world_size,
        }
        return (Note("info", "runner_chosen", chosen),)
    framework = json.loads(env.get("SM_FRAMEWORK_PARAMS") or "{}")
    from smsupervise.sagemaker.environment import DISTRIBUTED_FLAGS  # noqa: PLC0415

    wanted = [flag for flag in DISTRIBUTED_FLAGS if framework.get(flag) is True]
    if not wanted:
        return ()
    fields = {
        "flags": wanted,
        "impact": "the entry point runs once per host, as the toolkit's plain process runner "
        "does; smsupervise starts no launcher for these",
        "fix": "start your launcher yourself: SMSUPERVISE_TRAIN='<launcher> ... train.py'",
    }
    return (Note("warning", "runner_not_supported", fields),)


def require_software(launch: Launch, env: Mapping[str, str], where: str) -> None:
    """PyTorch/XLA needs the image's torch_xla with SageMaker's xla_spawn (the toolkit's check, made
    with the job's own Python, one probe, by ``prepare``): exit 2 naming what is missing."""
    if launch.runner != "xla":
        return
    from smsupervise.distributed import xla  # noqa: PLC0415 - XLA jobs only

    python = launch.argv[0]
    check = f"import importlib.util as u; print(u.find_spec({xla.MODULE!r}) is not None)"
    if probe.capture([python, "-c", check], env) != b"True\n":
        raise ConfigError(
            where,
            xla.FLAG,
            f"PyTorch/XLA is requested but {python} cannot import {xla.MODULE} (torch_xla with "
            "SageMaker's integration is not installed in this image)",
            "use a SageMaker PyTorch/XLA image (deep-learning-containers), or "
            "sagemaker_torch_distributed_enabled (torchrun) instead",
        )
