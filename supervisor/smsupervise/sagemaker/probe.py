"""Machine facts the toolkit probes for, asked the same way (its programs, when they exist)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING

from smsupervise.core import reaper
from smsupervise.core.spawn import LaunchSpec, spawn
from smsupervise.core.spawn import on_path as spawn_path

if TYPE_CHECKING:
    from smsupervise.sagemaker.environment import Machine

PROBE_TIMEOUT = 10.0


def on_path(name: str, env: Mapping[str, str], exclude: frozenset[str] = frozenset()) -> str | None:
    """The first executable ``name`` on the child's PATH whose real path is not in ``exclude``."""
    for candidate in spawn_path(name, env):
        if os.access(candidate, os.X_OK) and os.path.realpath(candidate) not in exclude:
            return candidate
    return None


def capture(argv: list[str], env: Mapping[str, str]) -> bytes | None:
    """Run a probe program to completion (bounded) and return its stdout; None if it failed."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        child = spawn(LaunchSpec(tuple(argv), env), write_fd, devnull)
    except Exception:
        os.close(read_fd)
        return None
    finally:
        os.close(write_fd)
        os.close(devnull)
    child.close()
    out = b""
    while select.select([read_fd], [], [], PROBE_TIMEOUT)[0]:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        out += chunk
    os.close(read_fd)
    status = reaper.wait_blocking(child.pid, PROBE_TIMEOUT)
    if status is None:
        child.send(signal.SIGKILL)
        reaper.wait_blocking(child.pid, PROBE_TIMEOUT)
        return None
    return out if status.ok else None


def machine(env: Mapping[str, str]) -> Machine:
    """CPUs, GPUs (nvidia-smi --list-gpus), Neuron cores (neuron-ls -j), smddprun/smddpmprun."""
    gpus = 0
    if on_path("nvidia-smi", env):
        listing = capture(["nvidia-smi", "--list-gpus"], env) or b""
        gpus = sum(1 for line in listing.decode(errors="replace").split("\n") if line.startswith("GPU "))
    neurons = 0
    if on_path("neuron-ls", env):
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            devices = json.loads(capture(["neuron-ls", "-j"], env) or b"[]")
            neurons = sum(int(item.get("nc_count", 0)) for item in devices)
    from smsupervise.sagemaker.environment import Machine  # noqa: PLC0415 - train mode only

    return Machine(
        num_cpus=os.cpu_count() or 1,
        num_gpus=gpus,
        num_neurons=neurons,
        smddprun_installed=on_path("smddprun", env) is not None,
        smddpmprun_installed=on_path("smddpmprun", env) is not None,
    )
