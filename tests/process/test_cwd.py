"""The job's working directory: one the job's uid may not reach is named as such (126), not as a
directory that "does not exist"; its twin, a directory the uid may enter, runs the job."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PYTHON, init_prefix, readable_pythonpath

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv (util-linux)"
)


@pytest.fixture
def private() -> Iterator[Path]:
    """A directory only root may enter, with a subdirectory the job's cwd will be."""
    top = Path(tempfile.mkdtemp(prefix="smsupervise-cwd-"))
    top.chmod(0o700)
    (top / "inside").mkdir(mode=0o777)
    yield top / "inside"
    shutil.rmtree(top, ignore_errors=True)


def _run_as_1000(mode: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        *init_prefix(mode),
        "setpriv", "--reuid=1000", "--regid=1000", "--clear-groups",
        PYTHON, "-m", "smsupervise", "--control-socket", "none", "--", "/bin/true",
    ]  # fmt: skip
    # smsupervise starts in ``cwd`` (its job inherits it): chdir as root first, then drop to uid 1000.
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": readable_pythonpath()}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_working_directory_the_user_cannot_reach_is_named_so(mode: str, private: Path) -> None:
    """Exit 126 and a start_failed that says the uid cannot reach it, never 'does not exist'."""
    done = _run_as_1000(mode, private)
    assert done.returncode == 126, done.stderr
    assert f"working directory {private} cannot be reached by uid 1000" in done.stderr
    assert "does not exist" not in done.stderr


def test_a_working_directory_the_user_can_enter_runs_the_job(mode: str, tmp_path: Path) -> None:
    """The twin: the same run from a directory uid 1000 may enter exits 0."""
    place = Path(tempfile.mkdtemp(prefix="smsupervise-cwd-open-"))
    place.chmod(0o755)
    try:
        done = _run_as_1000(mode, place)
    finally:
        shutil.rmtree(place, ignore_errors=True)
    assert done.returncode == 0, done.stderr
