"""``smsupervise-debug status`` shows the diagnosis sampler's last view: the job's processes with
their RSS, the memory cgroup, the filesystems; and, after a failure, the failure class."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PYTHON, Supervised, helper, sleep_until
from tests.debug.test_supervised import _client, _json, _train, _wait_for_output, sock_dir

__all__ = ["sock_dir"]  # the fixture: a short directory for the control socket


def test_status_shows_memory_and_filesystems(
    start: Callable[..., Supervised], mode: str, sock_dir: Path
) -> None:
    """A running job: status lists its process with a non-zero RSS, and the filesystems; the human
    rendering has the same lines."""
    sock = sock_dir / "c.sock"
    run = start(
        "--control-socket",
        str(sock),
        "--sample-interval",
        "0.1",
        PYTHON,
        helper("debug_job.py"),
        "--ignore-term",
    )
    _wait_for_output(run, "ready")
    status = sleep_until(
        lambda: (s := _json(mode, run, sock, "status"))["memory"]["processes"] and s,
        what="a sample of the job",
    )
    [job] = [p for p in status["memory"]["processes"] if p["pid"] == status["child"]["pid"]]
    assert job["rss"] > 1 << 20
    assert status["memory"]["oom_kills"] == 0
    assert any("/" in fs["paths"] for fs in status["filesystems"])
    assert status["sampler"]["samples"] >= 1
    assert status["failure_class"] is None
    human = _client(mode, run, "--socket", str(sock), "status").stdout
    assert f"  pid {job['pid']}: RSS " in human
    assert "filesystem / (" in human
    run.kill()


def test_status_after_a_failure_shows_its_class(
    start: Callable[..., Supervised], mode: str, sock_dir: Path, tmp_path: Path
) -> None:
    """The twin: during a keep-alive after a failure, status carries the failure class."""
    sock = sock_dir / "c.sock"
    env = {**os.environ, **_train(tmp_path, "sh -c 'echo failing; exit 3'")}
    run = start("--control-socket", str(sock), "--keep-alive-on-failure", "60", "train", env=env)
    _wait_for_output(run, "failing")
    status = sleep_until(
        lambda: (s := _json(mode, run, sock, "status"))["keep_alive"] and s, what="keep-alive"
    )
    assert status["failure_class"] == "ExitCode"
    assert "failure class: ExitCode" in _client(mode, run, "--socket", str(sock), "status").stdout
    assert _client(mode, run, "--socket", str(sock), "release").returncode == 0
    assert run.wait()[0] == 3
