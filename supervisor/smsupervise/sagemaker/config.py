"""Read and check SageMaker's configuration files under ``<base>/input/config``.

A missing file gets the toolkit's default; a malformed one raises ``ConfigError`` naming the file,
the field and the fix, before anything runs. Pure: takes a base dir, reads files, returns data.

Everything in these files ends up in argv or the environment (the toolkit's SM_* variables, the
arguments), and neither can carry a NUL, nor a lone surrogate (no UTF-8 for it): every string of
every file, keys included, and of every hyperparameter's own JSON (the toolkit decodes each value)
is checked, however the character was written (``\\u0000`` is the usual way). Nesting is checked
without recursion against ``MAX_NESTING``, which every encoder after the check can go through:
orjson stops at 255 levels, the stdlib's json at Python's recursion limit minus the stack in use.
"""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any, NamedTuple

from smsupervise.errors import ConfigError

INPUT_MODES = ("File", "Pipe", "FastFile")
MAX_NESTING = 100  # levels of JSON in one value: far beyond real hyperparameters, far below orjson's 255
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9.\-_]{1,64}")  # CreateTrainingJob's ChannelName, matched whole


class TrainingConfig(NamedTuple):
    """The job's configuration as SageMaker wrote it (values as in the files; not yet decoded)."""

    base_dir: str
    hyperparameters: dict[str, Any]
    resource_config: dict[str, Any]
    input_data_config: dict[str, dict[str, Any]]
    checkpoint_dir: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.base_dir, *parts)

    def pipe_channels(self) -> list[str]:
        return sorted(
            ch for ch, cfg in self.input_data_config.items() if cfg.get("TrainingInputMode") == "Pipe"
        )


def _read(path: str) -> Any:
    """The parsed JSON at ``path``; ``None`` when the file does not exist."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(path, "", f"cannot be read: {error.strerror}", "check its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(path, "", f"is not UTF-8 (byte {error.start})", "write it as UTF-8 JSON") from None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ConfigError(path, "", f"is not valid JSON: {error}", "fix the JSON syntax") from None
    except RecursionError:
        raise ConfigError(path, "", "nests JSON deeper than Python's parser allows", "flatten it") from None
    if isinstance(value, dict):
        for key, item in value.items():
            _check_value(path, key, item, 1)
    else:
        _check_value(path, "", value, 0)
    return value


def _field(name: str) -> str:
    """A key as it can be shown in a message (a NUL or a lone surrogate escaped)."""
    return json.dumps(name)[1:-1] if _unfit(name) else name


def _unfit(text: str) -> str:
    """What keeps ``text`` out of argv and the environment: a NUL or a lone surrogate; or ""."""
    if "\0" in text:
        return "a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"a lone surrogate (\\u{ord(text[error.start]):04x}), which is no character"
    return ""


def _check_value(path: str, field: str, value: Any, depth: int) -> None:
    """Every string (keys too) of ``value`` fit for argv and the environment, and its nesting
    within ``MAX_NESTING`` below ``depth``; walked without recursion. ``field`` names it in errors."""
    shown = _field(field)
    problem = _unfit(field)
    todo: list[tuple[Any, int]] = [(value, depth)]
    while todo and not problem:
        item, level = todo.pop()
        if isinstance(item, str):
            problem = _unfit(item)
        elif isinstance(item, dict | list):
            if level - depth >= MAX_NESTING:
                raise ConfigError(
                    path,
                    shown,
                    f"nests JSON deeper than {MAX_NESTING} levels, more than smsupervise passes on "
                    "(the encoders after this check stop at 255 levels or at Python's recursion limit)",
                    "flatten the value, or pass it in a file (a channel, or the source directory)",
                )
            if isinstance(item, dict):
                todo += [(key, level) for key in item]
            todo += [(child, level + 1) for child in (item.values() if isinstance(item, dict) else item)]
    if problem:
        raise ConfigError(
            path,
            shown,
            f"contains {problem}: no argv or environment can carry it (a NUL byte ends a C string)",
            "remove it (it is often written as the JSON escape \\u0000)",
        )


def _object(path: str, value: Any, field: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(
            path,
            field,
            f"must be a JSON object, not {type(value).__name__}",
            "see the SageMaker container contract for its shape",
        )
    return value


def _string(path: str, obj: dict[str, Any], field: str, required: bool = False) -> str | None:
    value = obj.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(
            path, field, f"must be a non-empty string, not {json.dumps(value)}", f"set '{field}' to a string"
        )
    return value


def _hosts(path: str, value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(host, str) and host for host in value):
        raise ConfigError(
            path,
            field,
            f"must be a non-empty list of host names, not {json.dumps(value)}",
            'e.g. ["algo-1", "algo-2"]',
        )
    return value


def default_resource_config() -> dict[str, Any]:
    """What the toolkit writes when there is no configuration: this machine as a one-host cluster."""
    host = socket.gethostname()
    return {
        "current_host": host,
        "hosts": [host],
        "current_instance_group": "homogeneousCluster",
        "instance_groups": [
            {"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": [host]}
        ],
    }


def _resource_config(path: str) -> dict[str, Any]:
    raw = _read(path)
    if raw is None:
        return default_resource_config()
    config = _object(path, raw)
    current = _string(path, config, "current_host", required=True)
    hosts = _hosts(path, config.get("hosts"), "hosts")
    if current not in hosts:
        raise ConfigError(
            path,
            "current_host",
            f"{current!r} is not in 'hosts' {hosts}",
            "add it to 'hosts' or fix the name",
        )
    for field in ("network_interface_name", "current_instance_type", "current_group_name"):
        _string(path, config, field)
    groups = config.get("instance_groups")
    if groups is not None:
        if not isinstance(groups, list):
            raise ConfigError(
                path,
                "instance_groups",
                "must be a list of objects",
                'e.g. [{"instance_group_name": "homogeneousCluster", "hosts": [...]}]',
            )
        for index, group in enumerate(groups):
            where = f"instance_groups[{index}]"
            _object(path, group, where)
            _string(path, group, "instance_group_name", required=True)
            _hosts(path, group.get("hosts"), f"{where}.hosts")
    return config


def _input_data_config(path: str) -> dict[str, dict[str, Any]]:
    raw = _read(path)
    if raw is None:
        return {}
    config = _object(path, raw)
    seen: dict[str, str] = {}
    for channel, settings in config.items():
        if not _CHANNEL_NAME.fullmatch(channel) or channel in (".", ".."):
            raise ConfigError(
                path,
                channel,
                "is not a valid channel name",
                "use 1 to 64 letters, digits, '.', '-' and '_' (not '.' or '..'), as CreateTrainingJob does",
            )
        variable = f"SM_CHANNEL_{channel.upper()}"
        if variable in seen:
            raise ConfigError(
                path,
                channel,
                f"and {seen[variable]!r} would both be {variable}",
                "give channels names that differ by more than letter case",
            )
        seen[variable] = channel
        _object(path, settings, channel)
        mode = settings.get("TrainingInputMode", "File")
        if mode not in INPUT_MODES:
            raise ConfigError(
                path,
                f"{channel}.TrainingInputMode",
                f"{json.dumps(mode)} is not a mode",
                f"use one of {', '.join(INPUT_MODES)}",
            )
    return config


def _hyperparameters(path: str, values: dict[str, Any]) -> dict[str, Any]:
    """Refuse what no process could be given, inside each value's own JSON too (the toolkit
    decodes each value, then encodes it again): the file itself was checked by ``_read``."""
    for key, value in values.items():
        if not isinstance(value, str):
            continue
        try:
            decoded = json.loads(value)
        except ValueError:
            continue  # not JSON: passed on as a string, as the toolkit does
        except RecursionError:
            raise ConfigError(
                path, _field(key), "nests JSON deeper than Python's parser allows", "flatten the value"
            ) from None
        _check_value(path, key, decoded, 0)
    return values


def load(base_dir: str) -> TrainingConfig:
    """Read ``<base_dir>/input/config/*.json``; raises ``ConfigError`` for anything unusable."""
    config_dir = os.path.join(base_dir, "input", "config")
    hp_path = os.path.join(config_dir, "hyperparameters.json")
    raw_hps = _read(hp_path)
    hyperparameters = {} if raw_hps is None else _hyperparameters(hp_path, _object(hp_path, raw_hps))
    resource_config = _resource_config(os.path.join(config_dir, "resourceconfig.json"))
    input_data_config = _input_data_config(os.path.join(config_dir, "inputdataconfig.json"))
    cp_path = os.path.join(config_dir, "checkpointconfig.json")
    raw_cp = _read(cp_path)
    checkpoint = {} if raw_cp is None else _object(cp_path, raw_cp)
    local = _string(cp_path, checkpoint, "LocalPath") or os.path.join(base_dir, "checkpoints")
    if not os.path.isabs(local):
        raise ConfigError(
            cp_path, "LocalPath", f"{local!r} is not an absolute path", "use e.g. /opt/ml/checkpoints"
        )
    return TrainingConfig(
        base_dir=base_dir,
        hyperparameters=hyperparameters,
        resource_config=resource_config,
        input_data_config=input_data_config,
        checkpoint_dir=local,
    )
