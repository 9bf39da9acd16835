"""From the invocation to a ``LaunchSpec``: what to run, with which environment, where."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from smsupervise.cli import Invocation
from smsupervise.errors import SpawnError
from smsupervise.spawn import LaunchSpec
from smsupervise.status import ExitCode


def _ourselves() -> set[str]:
    """Real paths that are smsupervise itself, so ``train`` on PATH never resolves to us."""
    return {os.path.realpath(sys.argv[0])} if sys.argv and sys.argv[0] else set()


def program_on_path(name: str, env: Mapping[str, str]) -> str | None:
    """The first executable ``name`` on the child's PATH that is not smsupervise itself."""
    ourselves = _ourselves()
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if (os.path.isfile(candidate) and os.access(candidate, os.X_OK)
                and os.path.realpath(candidate) not in ourselves):
            return candidate
    return None


def resolve(invocation: Invocation, env: Mapping[str, str]) -> LaunchSpec:
    """The command for ``exec`` mode, or the ``train``/``serve`` program on PATH."""
    if invocation.mode == "exec":
        return LaunchSpec(argv=invocation.args, env=dict(env))
    program = program_on_path(invocation.mode, env)
    if program is None:
        raise SpawnError(invocation.mode, f"no `{invocation.mode}` program on PATH={env.get('PATH', '')} "
                         "(other than smsupervise itself)", ExitCode.NOT_FOUND)
    return LaunchSpec(argv=(program, *invocation.args), env=dict(env))
