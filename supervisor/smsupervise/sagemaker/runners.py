"""The toolkit's choice of runner for a script-mode entry point, as argv: shell, package or Python.

Pure: it is given what the code directory holds (or will hold once the source is in place) and
returns the steps; it reads nothing and writes nothing. Distributed runners plug in here.
"""

from __future__ import annotations

import enum
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from smsupervise.core.spawn import LaunchSpec, Step, StepKind


class RunnerKind(enum.Enum):
    """The toolkit's runner names."""

    SHELL = "shell"
    PACKAGE = "package"
    PYTHON = "python"


class Runner(NamedTuple):
    """How the entry point runs: the steps (preparations, then the training step), and whether
    the entry point must be made executable first (the toolkit's ``chmod +x`` of a command entry
    point, which ``entry_point.install`` does whoever launches it)."""

    kind: RunnerKind
    steps: tuple[Step, ...]
    make_executable: bool


def choose(  # noqa: PLR0917 - the facts the toolkit's rule reads, each its own
    entry: str,
    listing: frozenset[str],
    python: str | None,
    args: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
) -> Runner:
    """The toolkit's rule: ``.sh`` or anything neither a package nor ``.py`` runs through the shell;
    a package (``setup.py``/``pyproject.toml``) is pip-installed and run with ``-m``; a ``.py`` file
    runs with Python after ``pip install -r requirements.txt`` when there is one.

    ``python`` is the user's interpreter; it is only needed (and must then be given) for the
    package and Python runners.
    """
    requirements = "requirements.txt" in listing
    package = "setup.py" in listing or "pyproject.toml" in listing
    if entry.endswith(".sh") or not (package or entry.endswith(".py")):
        command = f"./{shlex.quote(entry)} {' '.join(shlex.quote(a) for a in args)}"
        main = Step(StepKind.MAIN, "training", LaunchSpec(("/bin/sh", "-c", command), env, cwd))
        return Runner(RunnerKind.SHELL, (main,), make_executable=True)
    assert python is not None, "the package and Python runners need the user's interpreter"
    steps: list[Step] = []
    if package:
        extra = ("-r", "requirements.txt") if requirements else ()
        install = (python, "-m", "pip", "install", ".", *extra)
        steps.append(Step(StepKind.PREPARE, "installing the package", LaunchSpec(install, env, cwd)))
        argv: tuple[str, ...] = (python, "-m", re.sub(r"\.py$", "", entry), *args)
    else:
        if requirements:
            install = (python, "-m", "pip", "install", "-r", "requirements.txt")
            steps.append(Step(StepKind.PREPARE, "installing requirements.txt", LaunchSpec(install, env, cwd)))
        argv = (python, "--", entry, *args)
    steps.append(Step(StepKind.MAIN, "training", LaunchSpec(argv, env, cwd)))
    kind = RunnerKind.PACKAGE if package else RunnerKind.PYTHON
    return Runner(kind, tuple(steps), make_executable=False)


def needs_python(entry: str, listing: frozenset[str]) -> bool:
    """Whether ``choose`` will need the user's Python (not for the shell runner)."""
    package = "setup.py" in listing or "pyproject.toml" in listing
    return not (entry.endswith(".sh") or not (package or entry.endswith(".py")))


def with_launcher(runner: Runner, argv: Sequence[str], extra_env: Mapping[str, str]) -> Runner:
    """The same preparations, and the training step run by a distributed launcher (torchrun,
    mpirun, or sshd on an MPI worker) instead of the entry point itself; a command entry point is
    still made executable (the launcher runs it)."""
    *before, main = runner.steps
    env = {**main.spec.env, **extra_env}
    launched = main._replace(spec=main.spec._replace(argv=tuple(argv), env=env))
    return runner._replace(steps=(*before, launched))
