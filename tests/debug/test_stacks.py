"""``stacks`` on real Python jobs: faulthandler for a job that opted in, py-spy otherwise."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.conftest import PYTHON
from tests.debug.conftest import CLIENT_ENV, Job, debug_cli

VENV_BIN = os.path.dirname(PYTHON)
WITH_PYSPY = {**CLIENT_ENV, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
WITHOUT_PYSPY = {**CLIENT_ENV, "PATH": "/usr/bin:/bin"}


def _stacks(pid: int, env: dict[str, str]) -> tuple[int, list[dict[str, object]]]:
    done = debug_cli("--json", "--pid", str(pid), "stacks", env=env)
    return done.returncode, orjson.loads(done.stdout)


def test_an_opted_in_job_dumps_its_stacks_without_ptrace(job: Callable[..., Job], tmp_path: Path) -> None:
    """A job that called checkpoint.register() dumps every thread on SIGURG into its stacks file."""
    stacks_dir = str(tmp_path / "stacks")
    run = job("--opt-in", env={**CLIENT_ENV, "SMSUPERVISE_STACKS_DIR": stacks_dir})
    code, found = _stacks(run.pid, WITHOUT_PYSPY)  # no py-spy on PATH: faulthandler alone
    assert code == 0
    assert [(item["pid"], item["method"]) for item in found] == [(run.pid, "faulthandler")]
    assert "deep_in_training_loop" in str(found[0]["text"])
    assert run.proc.poll() is None  # SIGURG did not hurt it


@pytest.mark.skipif(
    shutil.which("py-spy", path=VENV_BIN) is None, reason="py-spy is not installed (make venv)"
)
def test_a_job_that_did_not_opt_in_gets_py_spy(job: Callable[..., Job]) -> None:
    """Without the opt-in, py-spy (ptrace allowed here: root) reads the stacks from outside."""
    run = job()
    code, found = _stacks(run.pid, WITH_PYSPY)
    assert code == 0, found
    assert [(item["pid"], item["method"]) for item in found] == [(run.pid, "py-spy")]
    assert "deep_in_training_loop" in str(found[0]["text"])


def test_without_either_the_problem_names_both_fixes(job: Callable[..., Job]) -> None:
    """Neither opted in nor py-spy: no stacks, exit 1, and the reason says what to install or call."""
    run = job()
    code, found = _stacks(run.pid, WITHOUT_PYSPY)
    assert code == 1
    assert found[0]["method"] == ""
    assert "py-spy is not installed (pip install py-spy) and the process did not opt in" in str(
        found[0]["problem"]
    )
    assert run.proc.poll() is None  # a process that did not opt in is never signalled
