"""The kernel's limits on what a program can be started with, checked before anything runs. Pure
(but for reading the stack limit, which the kernel takes ARG_MAX from).

Two limits (execve(2)): one argv or environment string may not exceed ``MAX_ARG_STRLEN``; and all
of them together, with the executable's name and one pointer each, must fit in a quarter of the
stack limit (``RLIMIT_STACK``), at least 128 KiB and at most 6 MiB (fs/exec.c, bprm_stack_limits).
A job over either fails with a bare "Argument list too long" from the spawn; here it is a
configuration error that names the hyperparameter behind it and the limit.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from smsupervise.errors import ConfigError

if TYPE_CHECKING:
    from smsupervise.core.spawn import LaunchSpec
    from smsupervise.sagemaker import config

MAX_ARG_STRLEN = 32 * 4096  # the kernel's limit on one argv or environment string (execve(2))
MIN_ARG_MAX = 32 * 4096  # ARG_MAX: the least the kernel allows, whatever the stack limit
MAX_STACK_SHARE = (8 << 20) // 4 * 3  # _STK_LIM / 4 * 3: the most, whatever the stack limit
POINTER = 8
SLACK = 4096  # a #! script's interpreter and its argument, which the kernel adds to the count


def arg_max(stack_limit: int) -> int:
    """The bytes execve allows for argv, environment and their pointers under ``stack_limit``."""
    share = (
        MAX_STACK_SHARE if stack_limit == resource.RLIM_INFINITY else min(MAX_STACK_SHARE, stack_limit // 4)
    )
    return max(share, MIN_ARG_MAX)


def exec_size(argv: Sequence[str], env: Mapping[str, str], program: str) -> int:
    """What execve counts: each string with its NUL, a pointer for each, the program's path."""
    strings = sum(len(arg.encode()) + 1 for arg in argv)
    strings += sum(len(name.encode()) + len(value.encode()) + 2 for name, value in env.items())
    path = len(program.encode()) + 1 if os.path.isabs(program) else 4096  # PATH_MAX: found on PATH
    return strings + path + POINTER * (max(len(argv), 1) + len(env) + 1) + SLACK


def check_exec_limits(child_env: Mapping[str, str], cfg: config.TrainingConfig) -> None:
    """execve refuses (E2BIG) an environment variable longer than MAX_ARG_STRLEN: say which one,
    and which hyperparameter made it so, before anything runs (the toolkit fails with a bare
    "Argument list too long")."""
    for name, value in child_env.items():
        size = len(name) + len(value.encode()) + 2
        if size <= MAX_ARG_STRLEN:
            continue
        biggest = _biggest(cfg) if name.startswith("SM_") else ""
        raise ConfigError(
            cfg.path("input", "config", "hyperparameters.json"),
            biggest or name,
            f"makes the environment variable {name} {size} bytes long, over the kernel's limit of "
            f"{MAX_ARG_STRLEN} bytes for one variable (MAX_ARG_STRLEN): no program could be started",
            "pass large values in a file (a channel, or the source directory) and give its path instead",
        )


def _biggest(cfg: config.TrainingConfig) -> str:
    hps = cfg.hyperparameters
    return max(hps, key=lambda key: len(key) + len(str(hps[key])), default="")


def _biggest_in(env: Mapping[str, str]) -> str:
    """The hyperparameter that takes the most room, from SM_HPS (the user's, as the job gets them)."""
    try:
        hps = json.loads(env.get("SM_HPS") or "{}")
    except ValueError:
        return ""
    if not isinstance(hps, dict):
        return ""
    return max(hps, key=lambda key: len(key) + len(json.dumps(hps[key])), default="")


def check_launch(spec: LaunchSpec, where: str, stack_limit: int | None = None) -> None:
    """execve refuses (E2BIG) argv and environment that together pass ``arg_max``: say so with
    the sizes, the hyperparameters' share and the biggest one, before anything runs. ``where``
    is the hyperparameters file."""
    stack = resource.getrlimit(resource.RLIMIT_STACK)[0] if stack_limit is None else stack_limit
    limit = arg_max(stack)
    size = exec_size(spec.argv, spec.env, spec.argv[0] if spec.argv else "")
    if size <= limit:
        return
    ours = sum(len(k) + len(v.encode()) + 2 + POINTER for k, v in spec.env.items() if k.startswith("SM_"))
    largest = sorted(spec.env, key=lambda name: len(spec.env[name]), reverse=True)[:3]
    shown = ", ".join(f"{name} ({len(spec.env[name].encode())} bytes)" for name in largest)
    stack_text = "unlimited" if stack == resource.RLIM_INFINITY else f"{stack >> 10} KiB"
    raise ConfigError(
        where,
        _biggest_in(spec.env),
        f"makes the program's arguments and environment {size} bytes together ({len(spec.argv)} "
        f"arguments, {len(spec.env)} variables, a pointer each), over the kernel's limit of {limit} "
        f"bytes for all of them (ARG_MAX: a quarter of the stack limit, here {stack_text}); the "
        f"hyperparameters' SM_* variables take {ours} bytes (each value is in SM_HP_*, SM_HPS, "
        f"SM_TRAINING_ENV and SM_USER_ARGS, and in the arguments); the largest: {shown}. No program "
        "could be started",
        "pass large values in a file (a channel, or the source directory) and give its path instead, "
        "or raise the stack limit (ulimit -s, docker run --ulimit stack=...)",
    )
