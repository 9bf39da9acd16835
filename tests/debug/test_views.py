"""The /proc views (tree, attach) on real process trees, through the real client with ``--pid``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON, UNSHARE_PROBLEM, fd_targets, helper, sleep_until
from tests.debug.conftest import CLIENT_ENV, Job, debug_cli, debug_json

SHELL_TREE = """
RANK=0 LOCAL_RANK=0 {py} {job} & RANK=1 LOCAL_RANK=1 {py} {job} --ignore-term &
{py} {job} --block-term & read line; wait
"""


def _rows(root: int) -> dict[int, dict[str, Any]]:
    return {row["pid"]: row for row in debug_json("--pid", str(root), "--interval", "0.2", "tree")}


def _started(parent: int, count: int) -> list[int]:
    from smsupervise.linux.proctree import descendants

    def ready() -> list[int] | None:
        pids = descendants(parent)
        return pids if len(pids) >= count else None

    return sleep_until(ready, what=f"{count} descendants of {parent}")


def test_tree_shows_ranks_and_flags_processes_that_ignore_or_block_term() -> None:
    """Ranks come from each process's environment; TERM ignored or blocked is flagged, the rest not."""
    script = SHELL_TREE.format(py=PYTHON, job=helper("debug_job.py"))
    run = subprocess.Popen(
        ["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=CLIENT_ENV
    )
    try:
        assert run.stdout is not None
        for _ in range(3):
            assert run.stdout.readline().strip() == b"ready"
        rows = _rows(run.pid)
        by_args = {tuple(r["argv"][2:]): r for r in rows.values() if r["argv"][:1] == [PYTHON]}
        plain, ignoring, blocking = by_args[()], by_args[("--ignore-term",)], by_args[("--block-term",)]
        assert (plain["rank"], plain["local_rank"]) == ("0", "0")
        assert (ignoring["rank"], ignoring["local_rank"]) == ("1", "1")
        assert plain["warning"] is None
        assert ignoring["warning"] == "ignores SIGTERM: the stop will end in SIGKILL"
        assert blocking["warning"] == "blocks SIGTERM: the stop will end in SIGKILL"
        assert "SIGTERM" in ignoring["ignores"]
        assert rows[run.pid]["waits_on"].startswith("read fd 0 (pipe:[")  # the shell's `read`
        assert {r["depth"] for r in by_args.values()} == {1}
        human = debug_cli("--pid", str(run.pid), "--interval", "0.2", "tree").stdout
        assert f"! pid {ignoring['pid']} ignores SIGTERM" in human
        assert f"! pid {plain['pid']}" not in human
    finally:
        from smsupervise.linux.proctree import descendants

        for pid in descendants(run.pid):
            os.kill(pid, 9)
        run.kill()
        run.communicate(timeout=10)


def test_tree_measures_cpu_over_the_interval(job: Callable[..., Job]) -> None:
    """A busy process shows CPU time over the interval, a sleeping one shows none."""
    busy = subprocess.Popen(
        [PYTHON, "-c", "print('ready', flush=True)\nwhile True: pass"], stdout=subprocess.PIPE
    )
    try:
        assert busy.stdout is not None
        assert busy.stdout.readline().strip() == b"ready"
        assert _rows(busy.pid)[busy.pid]["cpu_percent"] > 0
        sleeper = job()
        assert _rows(sleeper.pid)[sleeper.pid]["cpu_percent"] < 50
    finally:
        busy.kill()
        busy.communicate(timeout=10)


@pytest.mark.pid1
@pytest.mark.skipif(UNSHARE_PROBLEM is not None, reason=UNSHARE_PROBLEM or "")
@pytest.mark.parametrize(("reaps", "expected"), [(False, 5), (True, 0)])
def test_attach_counts_zombies_under_a_pid1_that_does_not_reap(reaps: bool, expected: int) -> None:
    """A PID 1 that never calls wait() collects zombies, and attach counts them under it."""
    argv = [PYTHON, helper("debug_job.py"), "--zombies", "5"]
    if reaps:
        argv = [PYTHON, "-m", "smsupervise", "--log-level", "error", *argv]
    run = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *argv],
        stdout=subprocess.PIPE,
        env=CLIENT_ENV,
    )
    try:
        assert run.stdout is not None
        sleep_until(lambda: b"ready" in run.stdout.readline(), what="ready")  # type: ignore[union-attr]
        pid1 = _started(run.pid, 1)[0]
        if reaps:  # smsupervise reaps on SIGCHLD: wait until it has
            sleep_until(
                lambda: debug_json("--pid", str(pid1), "--interval", "0", "status")["zombies"]["count"] == 0
            )
        result = debug_json("--pid", str(pid1), "--interval", "0.1", "status")
        assert result["zombies"]["count"] == expected
        if not reaps:
            assert result["zombies"]["by_parent"] == {str(pid1): 5}
            human = debug_cli("--pid", str(pid1), "--interval", "0.1", "status").stdout
            assert f"5 zombies under pid {pid1}: it does not reap them" in human
    finally:
        run.kill()
        run.communicate(timeout=10)


def test_attach_measures_a_fifo_readers_throughput(tmp_path: Path) -> None:
    """A reader draining a FIFO shows its rate; a stopped reader shows zero (the negative twin)."""
    fifo = str(tmp_path / "train_0")
    os.mkfifo(fifo)
    reader = subprocess.Popen(
        [PYTHON, "-c", f"import os\nfd = os.open({fifo!r}, os.O_RDONLY)\nwhile os.read(fd, 1 << 20): pass"]
    )
    writer = subprocess.Popen(["sh", "-c", f"exec cat /dev/zero > {fifo}"])
    try:
        sleep_until(lambda: fifo in fd_targets(reader.pid), what="FIFO open")
        flowing = debug_json("--pid", str(reader.pid), "--interval", "0.3", "status")["inputs"]
        assert [(i["path"], i["fifo"]) for i in flowing] == [(fifo, True)]
        assert flowing[0]["bytes_per_s"] > 0
        os.kill(reader.pid, 19)  # SIGSTOP
        sleep_until(lambda: Path(f"/proc/{reader.pid}/stat").read_text().split(") ")[1][0] == "T")
        stopped = debug_json("--pid", str(reader.pid), "--interval", "0.3", "status")["inputs"]
        assert stopped[0]["bytes_per_s"] == 0
    finally:
        for proc in (writer, reader):
            proc.kill()
            proc.wait(10)


def test_attach_refuses_socket_only_commands() -> None:
    """``--pid`` with an acting command is a usage error naming what --pid offers."""
    done = debug_cli("--pid", "1", "signal", "USR1")
    assert done.returncode == 2
    assert "--pid N offers status, tree and stacks" in done.stderr


def test_no_socket_is_a_clear_error(tmp_path: Path) -> None:
    """Without a supervisor the client names where it looked and what to pass."""
    env = {**CLIENT_ENV, "SMSUPERVISE_CONTROL_SOCKET": str(tmp_path / "none.sock")}
    done = debug_cli("status", env=env)
    assert done.returncode == 1
    assert f"no control socket at {tmp_path / 'none.sock'}: is smsupervise running?" in done.stderr
