"""Fixtures of the diagnosis tests: a real memory cgroup with a small limit to run smsupervise in."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from smsupervise.linux import cgroups
from tests.conftest import sleep_until

LIMIT = 64 << 20


class MemoryCgroup:
    """A child of our memory cgroup with ``memory.limit_in_bytes``/``memory.max`` set."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    def enter_argv(self, argv: list[str]) -> list[str]:
        """``argv`` started inside this cgroup (the shell moves itself in, then execs)."""
        script = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        return ["sh", "-c", script, str(self.path), *argv]

    def pids(self) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        return []

    def oom_kills(self) -> int:
        reading = cgroups.read_memory(cgroups.MemoryCgroup(self.version, str(self.path)))
        return reading.oom_kills or 0


def _make(limit: int) -> MemoryCgroup:
    if os.geteuid() != 0:
        pytest.skip("a memory cgroup of our own needs root")
    own = cgroups.memory_cgroup()
    if own is None:
        pytest.skip("no memory cgroup is mounted here")
    path = Path(own.path) / f"smsupervise-test-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
        if own.version == 1:
            (path / "memory.limit_in_bytes").write_text(str(limit))
            with contextlib.suppress(OSError):  # no swap accounting: nothing to cap
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit))
        else:
            (path / "memory.max").write_text(str(limit))
            (path / "memory.swap.max").write_text("0")
    except OSError as error:
        with contextlib.suppress(OSError):
            path.rmdir()
        pytest.skip(f"cannot make a memory cgroup with a limit under {own.path}: {error}")
    return MemoryCgroup(path, own.version)


@pytest.fixture
def memcg() -> Iterator[MemoryCgroup]:
    """A 64 MiB memory cgroup, emptied (SIGKILL) and removed at teardown."""
    yield from _group(LIMIT)


@pytest.fixture
def big_memcg() -> Iterator[MemoryCgroup]:
    """A 1 GiB memory cgroup (room for PyTorch), emptied and removed at teardown."""
    yield from _group(1 << 30)


def _group(limit: int) -> Iterator[MemoryCgroup]:
    group = _make(limit)
    yield group
    for pid in group.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    sleep_until(lambda: not group.pids(), what="the test cgroup to empty")
    sleep_until(lambda: _rmdir(group.path), what="the test cgroup to go")


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
