"""The training environment, exactly as sagemaker-training 5.1.4 builds it: SM_* variables and the
hyperparameters as command-line arguments. Pure functions of the configuration.

The stdlib ``json`` is used on purpose (not orjson): the toolkit decodes hyperparameters with
``json.loads`` and encodes with ``json.dumps``, and they differ from orjson on NaN, Infinity and
integers beyond 64 bits; byte-identical output needs the same library.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from smsupervise.sagemaker.config import TrainingConfig

# Keys the toolkit removes from the user's hyperparameters (params.SAGEMAKER_HYPERPARAMETERS);
# every other key starting with "sagemaker_" is removed too and becomes a framework parameter.
RESERVED = (
    "sagemaker_program",
    "sagemaker_submit_directory",
    "sagemaker_enable_cloudwatch_metrics",
    "sagemaker_region",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
    "default_user_module_name",
    "_tuning_objective_metric",
    "sagemaker_s3_output",
)
DISTRIBUTED_FLAGS = (
    "sagemaker_mpi_enabled",
    "sagemaker_parameter_server_enabled",
    "sagemaker_distributed_dataparallel_enabled",
    "sagemaker_pytorch_ddp_enabled",
    "sagemaker_pytorch_xla_multi_worker_enabled",
    "sagemaker_multi_worker_mirrored_strategy_enabled",
    "sagemaker_torch_distributed_enabled",
)


class Machine(NamedTuple):
    """Facts the toolkit probes for (nproc, nvidia-smi, neuron-ls, which smddprun)."""

    num_cpus: int
    num_gpus: int = 0
    num_neurons: int = 0
    smddprun_installed: bool = False
    smddpmprun_installed: bool = False


def machine_for(machine: Machine, instance_type: str) -> Machine:
    """The probed facts, with what the toolkit knows of an instance type without probing it."""
    if "trn2.48xlarge" in instance_type:
        return machine._replace(num_neurons=64)
    return machine


def decode_hyperparameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Each value through ``json.loads``; a value that is not JSON (or not a string) stays as is."""
    decoded = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except (ValueError, TypeError):
            decoded[key] = value
    return decoded


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin1")
    return str(value)


def to_cmd_args(hyperparameters: Mapping[str, Any]) -> list[str]:
    """``--key value`` pairs (``-k`` for one-letter keys), keys sorted; dicts become k=v,k=v."""
    args: list[str] = []
    for key in sorted(hyperparameters):
        name = _text(key)
        args.append(("--%s" % name if len(name) > 1 else "-%s" % name) if name else "")  # noqa: UP031
        value = hyperparameters[key]
        if hasattr(value, "items"):
            args.append(",".join("%s=%s" % (k, v) for k, v in sorted(value.items())))  # noqa: UP031
        else:
            args.append(_text(value))
    return args


def _env_value(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin1")
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def to_env_vars(mapping: Mapping[str, Any]) -> dict[str, str]:
    """``{"hosts": [...]} -> {"SM_HOSTS": '["algo-1"]'}``: the toolkit's naming and encoding."""
    return {
        ("SM_%s" % str(key).upper()) if key else "": _env_value(value)  # noqa: UP031
        for key, value in mapping.items()
    }


class TrainingEnv(NamedTuple):
    """What the toolkit computes for a job: its variables and the user's command-line arguments."""

    variables: dict[str, str]  # SM_* plus SAGEMAKER_JOB_NAME, CURRENT_HOST, SAGEMAKER_REGION
    user_args: list[str]
    entry_point: str | None
    submit_dir: str
    code_dir: str


def build(cfg: TrainingConfig, env: Mapping[str, str], machine: Machine) -> TrainingEnv:
    """The toolkit's ``Environment`` for ``cfg``, as environment variables."""
    base = cfg.base_dir
    code_dir = os.path.join(base, "code")
    output_dir = os.path.join(base, "output")
    decoded = decode_hyperparameters(cfg.hyperparameters)
    sagemaker = {k: v for k, v in decoded.items() if k in RESERVED or k.startswith("sagemaker_")}
    hps = {k: v for k, v in decoded.items() if k not in sagemaker}
    framework = {k: v for k, v in sagemaker.items() if k not in RESERVED}

    rc = cfg.resource_config
    hosts = rc["hosts"]
    current_host = rc["current_host"]
    group = rc.get("current_group_name", "homogeneousCluster")
    groups_config = rc.get("instance_groups", []) or []
    group_hosts: list[str] = next(
        (g["hosts"] for g in groups_config if g["instance_group_name"] == group), []
    )
    groups = [g["instance_group_name"] for g in groups_config]
    groups_dict = {g["instance_group_name"]: g for g in groups_config}
    default_dist = [group] if any(framework.get(flag, False) for flag in DISTRIBUTED_FLAGS) else []
    dist_groups = framework.get("sagemaker_distribution_instance_groups", default_dist)
    if groups_config:
        dist_hosts = [h for g in groups_config if g["instance_group_name"] in dist_groups for h in g["hosts"]]
    else:
        dist_hosts = list(hosts)
    master = next(iter(dist_hosts)) if dist_hosts else next(iter(hosts))

    program_env = env.get("SAGEMAKER_PROGRAM")
    entry_point = program_env or sagemaker.get("sagemaker_program")
    module_name: Any = program_env if program_env is not None else str(sagemaker.get("sagemaker_program"))
    if module_name and module_name.endswith(".py"):
        module_name = module_name[:-3]
    submit_dir = str(sagemaker.get("sagemaker_submit_directory", code_dir))
    log_level = sagemaker.get("sagemaker_container_log_level", 20)
    channels = {ch: os.path.join(base, "input", "data", ch) for ch in cfg.input_data_config}
    mp = env.get("SM_HP_MP_PARAMETERS")
    user_args = to_cmd_args(hps)
    props: dict[str, Any] = {
        "additional_framework_parameters": framework,
        "channel_input_dirs": channels,
        "current_host": current_host,
        "current_instance_group": group,
        "current_instance_group_hosts": group_hosts,
        "current_instance_type": rc.get("current_instance_type", "local"),
        "distribution_hosts": dist_hosts,
        "distribution_instance_groups": dist_groups,
        "framework_module": env.get("SAGEMAKER_TRAINING_MODULE"),
        "hosts": hosts,
        "hyperparameters": hps,
        "input_config_dir": os.path.join(base, "input", "config"),
        "input_data_config": cfg.input_data_config,
        "input_dir": os.path.join(base, "input"),
        "instance_groups": groups,
        "instance_groups_dict": groups_dict,
        "is_hetero": len(groups) > 1,
        "is_master": current_host == master,
        "is_modelparallel_enabled": mp and mp != "{}",
        "is_smddpmprun_installed": machine.smddpmprun_installed,
        "is_smddprun_installed": machine.smddprun_installed,
        "job_name": env.get("TRAINING_JOB_NAME"),
        "log_level": log_level,
        "master_hostname": master,
        "model_dir": os.path.join(base, "model"),
        "module_dir": submit_dir,
        "module_name": module_name,
        "network_interface_name": rc.get("network_interface_name", "eth0"),
        "num_cpus": machine.num_cpus,
        "num_gpus": machine.num_gpus,
        "num_neurons": machine.num_neurons,
        "output_data_dir": os.path.join(output_dir, "data"),
        "output_dir": output_dir,
        "output_intermediate_dir": os.path.join(output_dir, "intermediate"),
        "resource_config": rc,
        "topology": rc.get("topology", []),
        "user_entry_point": entry_point,
    }
    sm: dict[str, Any] = {
        "hosts": hosts,
        "network_interface_name": props["network_interface_name"],
        "hps": hps,
        "user_entry_point": entry_point,
        "framework_params": framework,
        "resource_config": rc,
        "input_data_config": cfg.input_data_config,
        "output_data_dir": props["output_data_dir"],
        "channels": sorted(channels),
        "current_host": current_host,
        "current_instance_type": props["current_instance_type"],
        "current_instance_group": group,
        "current_instance_group_hosts": group_hosts,
        "instance_groups": groups,
        "instance_groups_dict": groups_dict,
        "distribution_instance_groups": dist_groups,
        "is_hetero": props["is_hetero"],
        "module_name": module_name,
        "log_level": log_level,
        "framework_module": props["framework_module"],
        "input_dir": props["input_dir"],
        "input_config_dir": props["input_config_dir"],
        "output_dir": output_dir,
        "num_cpus": machine.num_cpus,
        "num_gpus": machine.num_gpus,
        "num_neurons": machine.num_neurons,
        "model_dir": props["model_dir"],
        "module_dir": submit_dir,
        "training_env": props,
        "user_args": user_args,
        "output_intermediate_dir": props["output_intermediate_dir"],
    }
    if props["topology"]:
        sm["topology"] = props["topology"]
    for name, path in channels.items():
        sm["channel_%s" % name] = path  # noqa: UP031
    for key, value in hps.items():
        sm["hp_%s" % key] = value  # noqa: UP031
    region = sagemaker.get("sagemaker_region", env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION"))
    variables = {
        "SAGEMAKER_JOB_NAME": _text(sagemaker.get("sagemaker_job_name", "")),
        "CURRENT_HOST": current_host,
        "SAGEMAKER_REGION": _text(region or ""),
    }
    variables.update(to_env_vars(sm))
    return TrainingEnv(
        variables=variables,
        user_args=user_args,
        entry_point=None if entry_point is None else str(entry_point),
        submit_dir=submit_dir,
        code_dir=code_dir,
    )
