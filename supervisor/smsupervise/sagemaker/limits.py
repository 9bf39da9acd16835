"""The kernel's limits on what a program can be started with, checked before anything runs. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from smsupervise.errors import ConfigError

if TYPE_CHECKING:
    from smsupervise.sagemaker import config

MAX_ARG_STRLEN = 32 * 4096  # the kernel's limit on one argv or environment string (execve(2))


def check_exec_limits(child_env: Mapping[str, str], cfg: config.TrainingConfig) -> None:
    """execve refuses (E2BIG) an environment variable longer than MAX_ARG_STRLEN: say which one,
    and which hyperparameter made it so, before anything runs (the toolkit fails with a bare
    "Argument list too long")."""
    for name, value in child_env.items():
        size = len(name) + len(value.encode()) + 2
        if size <= MAX_ARG_STRLEN:
            continue
        hps = cfg.hyperparameters
        biggest = max(hps, key=lambda key: len(str(hps[key])), default="") if name.startswith("SM_") else ""
        raise ConfigError(
            cfg.path("input", "config", "hyperparameters.json"),
            biggest or name,
            f"makes the environment variable {name} {size} bytes long, over the kernel's limit of "
            f"{MAX_ARG_STRLEN} bytes for one variable (MAX_ARG_STRLEN): no program could be started",
            "pass large values in a file (a channel, or the source directory) and give its path instead",
        )
