"""``smsupervise-debug inspect [OPTIONS] train|serve|CMD``: what smsupervise would run here, from
the same pure ``decide()`` that ``train`` calls, without running, preparing or writing anything.

The machine probe (``nvidia-smi``) runs as for ``train``; ``prepare()`` does not (no unpacking,
no chmod). Two values cannot be known in advance and are marked so: the checkpoint
acknowledgement file (named per run) and, with the default socket path, which candidate is free.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from smsupervise.debug.listener import job_env
from smsupervise.sagemaker import plan as planning
from smsupervise.sagemaker import probe
from smsupervise.settings import STOP_MARGIN, Invocation, Settings

PER_RUN = {"SMSUPERVISE_CHECKPOINT_DONE": "named per run (smsupervise-<pid>-<random>)"}


def source_of(key: str, value: str, env: Mapping[str, str], debug: Mapping[str, str]) -> str:
    """Where one variable of the job's environment comes from."""
    if key in debug:
        return "smsupervise: the control socket"
    if key in PER_RUN:
        return f"smsupervise: {PER_RUN[key]}"
    if key not in env:
        return "smsupervise"
    if env[key] == value:
        return "inherited"
    return f"smsupervise, replacing the inherited {env[key]!r}"


def stop_budget(settings: Settings) -> dict[str, Any]:
    """The stop's arithmetic, as ``train`` checks it at start."""
    parts = {
        "grace_period": settings.grace_period,
        "leftover_grace": settings.leftover_grace,
        "margin": STOP_MARGIN,
    }
    if settings.checkpointing:
        parts = {"checkpoint_timeout": settings.checkpoint_timeout, **parts}
    total = sum(parts.values())
    text = " + ".join(f"{name} {value:g}" for name, value in parts.items())
    return {
        **parts,
        "total": total,
        "stop_budget": settings.stop_budget,
        "check": f"{text} = {total:g} <= --stop-budget {settings.stop_budget:g}",
    }


def inspect(invocation: Invocation, env: Mapping[str, str]) -> dict[str, Any]:
    """What ``invocation`` runs here; raises what ``train`` raises (ConfigError, SpawnError)."""
    settings = invocation.settings
    machine = probe.machine(env) if invocation.mode == "train" else None
    plan = planning.decide(invocation, env, machine)
    socket_setting = settings.control_socket
    debug = {} if socket_setting == "none" else job_env(socket_setting or "/run/smsupervise/control.sock")
    steps = []
    for step in plan.steps:
        full = {**step.spec.env, **debug}
        steps.append(
            {
                "kind": step.kind.value,
                "label": step.label,
                "argv": list(step.spec.argv),
                "cwd": step.spec.cwd or os.getcwd(),
                "env": {
                    key: {"value": value, "source": source_of(key, value, env, debug)}
                    for key, value in sorted(full.items())
                },
            }
        )
    main_env = plan.steps[-1].spec.env if plan.steps else {}
    return {
        "mode": invocation.mode,
        "steps": steps,
        "pending": None if plan.steps else "the source is downloaded from S3 first: steps are chosen then",
        "channels": [
            c for c in main_env.get("SM_CHANNELS", "[]").strip("[]").replace('"', "").split(",") if c
        ],
        "pipe_channels": [spec.name for spec in plan.pipes],
        "outcome_dir": plan.outcome_dir,
        "stop": stop_budget(settings),
        "notes": [{"level": n.level, "event": n.event, **n.fields} for n in plan.notes],
        "control_socket": socket_setting
        or "default: the first free of /run/smsupervise, $XDG_RUNTIME_DIR, /tmp",
    }
