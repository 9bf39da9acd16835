"""What a real ``smsupervise -- CMD`` imports (``python -X importtime``): nothing that only train mode,
distributed jobs or a connected debug client need. Start-up time is a benchmark target
(benchmarks/pid1.py); this keeps the imports that time is made of from creeping back."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from tests.conftest import PYTHON, ROOT
from tests.sagemaker import fixtures

ENV = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT / "supervisor")}

# Modules exec mode must not import: train-only planning and unpacking, distributed jobs, the
# control server before anyone connects, shlex (a hook's or SMSUPERVISE_TRAIN's command line), and
# structlog (only --log-format text needs it).
NOT_IN_EXEC_MODE = (
    "smsupervise.debug.service",
    "smsupervise.debug.control",
    "smsupervise.debug.protocol",
    "smsupervise.sagemaker.sourcedir",
    "smsupervise.sagemaker.config",
    "smsupervise.sagemaker.environment",
    "smsupervise.sagemaker.runners",
    "smsupervise.distributed",
    "smsupervise.pipemode",
    "tarfile",
    "shlex",
    "structlog",
)


def imported(argv: list[str], env: dict[str, str]) -> tuple[set[str], int]:
    """The modules a run of ``python -X importtime ARGV`` imported, and its exit code."""
    done = subprocess.run(
        [PYTHON, "-X", "importtime", *argv], capture_output=True, env=env, timeout=120, check=False
    )
    names = set()
    for line in done.stderr.decode(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names, done.returncode


def unwanted(modules: Iterable[str]) -> list[str]:
    """The modules of ``modules`` that exec mode must not import (a package counts with its modules)."""
    return sorted(
        name
        for name in modules
        for banned in NOT_IN_EXEC_MODE
        if name == banned or name.startswith(banned + ".")
    )


def test_the_checker_flags_a_banned_module_and_its_submodules() -> None:
    """The checker finds a banned module, a module of a banned package, and passes a lookalike."""
    assert unwanted(["asyncio", "tarfile", "smsupervise.distributed.peers", "smsupervise.debugx"]) == [
        "smsupervise.distributed.peers",
        "tarfile",
    ]
    assert unwanted(["asyncio", "smsupervise.debug.listener", "smsupervise.sagemaker.plan"]) == []


def test_exec_mode_imports_only_what_it_runs(tmp_path: Path) -> None:
    """``smsupervise -- /bin/true`` with its control socket on runs and imports none of the banned
    modules, while the socket module itself is imported (the list was read at all)."""
    sock = tmp_path / "c.sock"
    names, code = imported(["-m", "smsupervise", "--control-socket", str(sock), "--", "/bin/true"], ENV)
    assert code == 0
    assert "smsupervise.debug.listener" in names
    assert unwanted(names) == []


def test_the_first_connection_imports_the_control_server(tmp_path: Path) -> None:
    """The twin: a job that asks the control socket for its status gets an answer, so the server
    (service, control, protocol) was imported, at that first connection."""
    sock = tmp_path / "c.sock"
    client = [PYTHON, "-m", "smsupervise.debug", "--json", "--socket", str(sock), "status"]
    names, code = imported(["-m", "smsupervise", "--control-socket", str(sock), "--", *client], ENV)
    assert code == 0
    server = {"smsupervise.debug.control", "smsupervise.debug.protocol", "smsupervise.debug.service"}
    assert server <= set(unwanted(names))


def test_train_mode_imports_the_unpacking_it_needs(tmp_path: Path) -> None:
    """The twin: ``train`` with a source tarball imports sourcedir, config, runners and tarfile (the
    checker sees them in a real run)."""
    base = fixtures.build(tmp_path, hyperparameters={}, source="tar.gz")
    dump = tmp_path / "dump.json"
    env = {**ENV, "SAGEMAKER_BASE_DIR": str(base), "SMSUPERVISE_PYTHON": PYTHON, "DUMP": str(dump)}
    names, code = imported(["-m", "smsupervise", "--control-socket", "none", "train"], env)
    assert code == 0
    assert dump.exists()  # the unpacked entry point ran
    needed = {"sourcedir", "config", "runners"}
    assert {*(f"smsupervise.sagemaker.{name}" for name in needed), "tarfile"} <= set(unwanted(names))


# The real entry point, watched: the collector's state while the command line is parsed (start-up)
# and when the run begins (app.run, which then runs the job for real).
WATCHED_ENTRY = """
import gc, os, sys
from smsupervise import app, cli
seen = []
parse, run = cli.parse, app.run
cli.parse = lambda argv, env: seen.append(("start-up", gc.isenabled())) or parse(argv, env)
def watched_run(invocation, inbox):
    seen.append(("run", gc.isenabled(), gc.get_freeze_count() > 0))
    os.write(1, repr(seen).encode())
    return run(invocation, inbox)
app.run = watched_run
sys.argv = ["smsupervise", "--control-socket", "none", "--", "/bin/true"]
cli.entry()
"""


def test_the_collector_is_off_during_start_up_and_on_for_the_run() -> None:
    """No garbage collection while start-up imports (the twin: it is off then), and the collector
    is back on, with start-up's objects frozen, when the run begins; the run exits 0."""
    done = subprocess.run(
        [PYTHON, "-c", WATCHED_ENTRY], capture_output=True, text=True, env=ENV, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == repr([("start-up", False), ("run", True, True)])
