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


class _Cluster(NamedTuple):
    """The toolkit's view of the hosts: instance groups and who takes part in distribution."""

    group: str
    group_hosts: list[str]
    groups: list[str]
    groups_dict: dict[str, Any]
    dist_groups: Any  # a framework parameter's value: what the user gave
    dist_hosts: list[str]
    master: str


def _cluster(rc: Mapping[str, Any], framework: Mapping[str, Any]) -> _Cluster:
    """Instance groups, distribution groups and hosts, and the master, as the toolkit derives them
    from resourceconfig.json and the framework parameters."""
    hosts = rc["hosts"]
    group = rc.get("current_group_name", "homogeneousCluster")
    groups_config = rc.get("instance_groups", []) or []
    group_hosts: list[str] = next(
        (g["hosts"] for g in groups_config if g["instance_group_name"] == group), []
    )
    default_dist = [group] if any(framework.get(flag, False) for flag in DISTRIBUTED_FLAGS) else []
    dist_groups = framework.get("sagemaker_distribution_instance_groups", default_dist)
    if groups_config:
        dist_hosts = [h for g in groups_config if g["instance_group_name"] in dist_groups for h in g["hosts"]]
    else:
        dist_hosts = list(hosts)
    return _Cluster(
        group,
        group_hosts,
        [g["instance_group_name"] for g in groups_config],
        {g["instance_group_name"]: g for g in groups_config},
        dist_groups,
        dist_hosts,
        next(iter(dist_hosts)) if dist_hosts else next(iter(hosts)),
    )


def _properties(
    cfg: TrainingConfig, env: Mapping[str, str], machine: Machine, decoded: Mapping[str, Any]
) -> dict[str, Any]:
    """The toolkit's ``Environment.properties()`` (``SM_TRAINING_ENV``), keys in its order, from
    the decoded hyperparameters (``decode_hyperparameters``)."""
    base = cfg.base_dir
    output_dir = os.path.join(base, "output")
    sagemaker = _sagemaker(decoded)
    framework = {k: v for k, v in sagemaker.items() if k not in RESERVED}
    rc = cfg.resource_config
    cluster = _cluster(rc, framework)
    program_env = env.get("SAGEMAKER_PROGRAM")
    module_name: Any = program_env if program_env is not None else str(sagemaker.get("sagemaker_program"))
    if module_name and module_name.endswith(".py"):
        module_name = module_name[:-3]
    mp = env.get("SM_HP_MP_PARAMETERS")
    return {
        "additional_framework_parameters": framework,
        "channel_input_dirs": {ch: os.path.join(base, "input", "data", ch) for ch in cfg.input_data_config},
        "current_host": rc["current_host"],
        "current_instance_group": cluster.group,
        "current_instance_group_hosts": cluster.group_hosts,
        "current_instance_type": rc.get("current_instance_type", "local"),
        "distribution_hosts": cluster.dist_hosts,
        "distribution_instance_groups": cluster.dist_groups,
        "framework_module": env.get("SAGEMAKER_TRAINING_MODULE"),
        "hosts": rc["hosts"],
        "hyperparameters": {k: v for k, v in decoded.items() if k not in sagemaker},
        "input_config_dir": os.path.join(base, "input", "config"),
        "input_data_config": cfg.input_data_config,
        "input_dir": os.path.join(base, "input"),
        "instance_groups": cluster.groups,
        "instance_groups_dict": cluster.groups_dict,
        "is_hetero": len(cluster.groups) > 1,
        "is_master": rc["current_host"] == cluster.master,
        "is_modelparallel_enabled": mp and mp != "{}",
        "is_smddpmprun_installed": machine.smddpmprun_installed,
        "is_smddprun_installed": machine.smddprun_installed,
        "job_name": env.get("TRAINING_JOB_NAME"),
        "log_level": sagemaker.get("sagemaker_container_log_level", 20),
        "master_hostname": cluster.master,
        "model_dir": os.path.join(base, "model"),
        "module_dir": str(sagemaker.get("sagemaker_submit_directory", os.path.join(base, "code"))),
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
        "user_entry_point": program_env or sagemaker.get("sagemaker_program"),
    }


def _variables(props: Mapping[str, Any], user_args: list[str]) -> dict[str, Any]:
    """The toolkit's ``Environment`` mapping behind the SM_* variables (``to_env_vars``), keys in
    its order, then one ``channel_<name>`` per channel and one ``hp_<key>`` per hyperparameter."""
    sm: dict[str, Any] = {
        "hosts": props["hosts"],
        "network_interface_name": props["network_interface_name"],
        "hps": props["hyperparameters"],
        "user_entry_point": props["user_entry_point"],
        "framework_params": props["additional_framework_parameters"],
        "resource_config": props["resource_config"],
        "input_data_config": props["input_data_config"],
        "output_data_dir": props["output_data_dir"],
        "channels": sorted(props["channel_input_dirs"]),
        "current_host": props["current_host"],
        "current_instance_type": props["current_instance_type"],
        "current_instance_group": props["current_instance_group"],
        "current_instance_group_hosts": props["current_instance_group_hosts"],
        "instance_groups": props["instance_groups"],
        "instance_groups_dict": props["instance_groups_dict"],
        "distribution_instance_groups": props["distribution_instance_groups"],
        "is_hetero": props["is_hetero"],
        "module_name": props["module_name"],
        "log_level": props["log_level"],
        "framework_module": props["framework_module"],
        "input_dir": props["input_dir"],
        "input_config_dir": props["input_config_dir"],
        "output_dir": props["output_dir"],
        "num_cpus": props["num_cpus"],
        "num_gpus": props["num_gpus"],
        "num_neurons": props["num_neurons"],
        "model_dir": props["model_dir"],
        "module_dir": props["module_dir"],
        "training_env": props,
        "user_args": user_args,
        "output_intermediate_dir": props["output_intermediate_dir"],
    }
    if props["topology"]:
        sm["topology"] = props["topology"]
    for name, path in props["channel_input_dirs"].items():
        sm["channel_%s" % name] = path  # noqa: UP031
    for key, value in props["hyperparameters"].items():
        sm["hp_%s" % key] = value  # noqa: UP031
    return sm


def _sagemaker(decoded: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters the toolkit takes for itself: RESERVED and every ``sagemaker_*``."""
    return {k: v for k, v in decoded.items() if k in RESERVED or k.startswith("sagemaker_")}


def build(cfg: TrainingConfig, env: Mapping[str, str], machine: Machine) -> TrainingEnv:
    """The toolkit's ``Environment`` for ``cfg``, as environment variables."""
    decoded = decode_hyperparameters(cfg.hyperparameters)
    props = _properties(cfg, env, machine, decoded)
    user_args = to_cmd_args(props["hyperparameters"])
    # the two the toolkit keeps for itself and reads again here (RESERVED, not framework parameters)
    region = decoded.get("sagemaker_region", env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION"))
    variables = {
        "SAGEMAKER_JOB_NAME": _text(decoded.get("sagemaker_job_name", "")),
        "CURRENT_HOST": props["current_host"],
        "SAGEMAKER_REGION": _text(region or ""),
    }
    variables.update(to_env_vars(_variables(props, user_args)))
    entry_point = props["user_entry_point"]
    return TrainingEnv(
        variables=variables,
        user_args=user_args,
        entry_point=None if entry_point is None else str(entry_point),
        submit_dir=props["module_dir"],
        code_dir=os.path.join(cfg.base_dir, "code"),
    )
