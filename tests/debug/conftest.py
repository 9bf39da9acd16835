"""Fixtures for the debug tests: real jobs to look at, and the real client to look with."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from smsupervise.linux.proctree import descendants
from tests.conftest import PYTHON, helper, readable_pythonpath

CLIENT_ENV = {**os.environ, "PYTHONPATH": readable_pythonpath()}


def debug_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``smsupervise-debug`` (as ``python -m smsupervise.debug``) and capture its output."""
    return subprocess.run(
        [PYTHON, "-m", "smsupervise.debug", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env or CLIENT_ENV,
    )


def debug_json(*args: str) -> Any:
    """``--json`` output of a client command that must succeed."""
    done = debug_cli("--json", *args)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


class Job:
    """A running job (a real process tree) that has printed ``ready``."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env or CLIENT_ENV)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # event-driven: the job says when it is ready
            if line.strip() == b"ready":
                break
        else:
            raise AssertionError(f"{argv} ended before saying ready")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def job() -> Iterator[Callable[..., Job]]:
    """Start ``tests/helpers/debug_job.py`` (or any argv) and kill its tree at teardown."""
    started: list[Job] = []

    def start(*args: str, argv: list[str] | None = None, env: dict[str, str] | None = None) -> Job:
        run = Job(argv or [PYTHON, helper("debug_job.py"), *args], env)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()
