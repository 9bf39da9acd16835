"""Shared fixtures: run smsupervise for real, as a subreaper and as PID 1 in a fresh PID namespace."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import uvloop

pytest_plugins = ["tests.strict_skips"]

ROOT = Path(__file__).resolve().parent.parent
HELPERS = ROOT / "tests" / "helpers"
PYTHON = sys.executable
T = TypeVar("T")


def sleep_until(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.005, what: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline (a
    failure detector, not a speed claim: generous, so a loaded machine never trips it)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def fd_targets(pid: int) -> set[str]:
    """What ``pid``'s open fds point at (``socket:[N]``, a path, ...). A process's fds come and
    go while we list them (its own start-up, the listing's fd), so a vanished fd is skipped."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return found


def _unshare_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root for unshare --pid"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return f"unshare --pid failed here: {probe.stderr.decode(errors='replace').strip()}"
    return None


UNSHARE_PROBLEM = _unshare_problem()
MODES = [
    pytest.param("subreaper", id="subreaper"),
    pytest.param(
        "pid1",
        id="pid1",
        marks=[
            pytest.mark.pid1,
            pytest.mark.skipif(UNSHARE_PROBLEM is not None, reason=UNSHARE_PROBLEM or ""),
        ],
    ),
]


RUNTIME_PACKAGES = ("smsupervise", "uvloop", "orjson", "structlog", "aiofiles")


@functools.cache
def readable_pythonpath() -> str:
    """A PYTHONPATH under which another uid (the tests' uid 1000 clients and jobs) can import smsupervise
    and its runtime dependencies: this checkout's own ``supervisor/`` when every user can read it, else
    (a clone in a ``mktemp -d`` directory, a root-only venv) a world-readable copy made once per session
    under /tmp and removed at exit."""
    own = str(ROOT / "supervisor")
    probe = [
        "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PYTHON, "-c",
        "import " + ", ".join(RUNTIME_PACKAGES),
    ]  # fmt: skip
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return own
    env = {**os.environ, "PYTHONPATH": own}
    if subprocess.run(probe, capture_output=True, check=False, env=env).returncode == 0:
        return own
    copy = Path(tempfile.mkdtemp(prefix="smsupervise-readable-", dir="/tmp"))
    atexit.register(shutil.rmtree, copy, ignore_errors=True)
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec is not None, name
        assert spec.submodule_search_locations, name
        source = Path(next(iter(spec.submodule_search_locations)))
        shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return str(copy)


# `make check` runs `-m "not slow"`: these folders (hosts, containers, the local runner, the real toolkit),
# files (torch, the Pipe bench, throttled downloads) and every PID-1 twin are slow by nature; `make test`
# runs them all.
SLOW_FOLDERS = frozenset({"distributed", "container", "local", "sagemaker"})
SLOW_FILES = frozenset({"process/test_torch.py", "process/test_pipe_bench.py", "process/test_source_s3.py"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow ones: a whole slow folder, and every test run as PID 1."""
    tests = ROOT / "tests"
    for item in items:
        parts = item.path.relative_to(tests).parts if item.path.is_relative_to(tests) else ()
        slow = bool(parts) and (parts[0] in SLOW_FOLDERS or "/".join(parts) in SLOW_FILES)
        if slow or item.get_closest_marker("pid1") is not None:
            item.add_marker(pytest.mark.slow)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Every async test runs on both loops smsupervise can run on (``--event-loop``): uvloop, its
    default, and the standard library's."""
    return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


def init_prefix(mode: str) -> list[str]:
    """How to start an init under test: as PID 1 of a new namespace, or as a plain child of ours."""
    if mode == "pid1":
        return ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    return []


def supervisor_argv(mode: str, *args: str) -> list[str]:
    return [*init_prefix(mode), PYTHON, "-m", "smsupervise", *args]


class Supervised:
    """A running smsupervise (or peer init), with the host pid of the init itself."""

    def __init__(self, mode: str, argv: list[str], **popen: Any) -> None:
        self.mode = mode
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        self.proc = subprocess.Popen(argv, **popen)
        self._init_pid: int | None = None
        self._err = b""  # stderr already read by wait_event

    @property
    def init_pid(self) -> int:
        """The init's pid as seen from here (for PID 1 mode: unshare's child)."""
        if self._init_pid is None:
            if self.mode == "pid1":
                path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"

                def child() -> int | None:
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        return int(Path(path).read_text().split()[0])
                    return None

                self._init_pid = sleep_until(child, what="unshare's child")
            else:
                self._init_pid = self.proc.pid
        return self._init_pid

    def signal(self, signum: int) -> None:
        os.kill(self.init_pid, signum)

    def catching(self, signum: int) -> bool:
        """Whether the init has a handler for ``signum`` yet (SigCgt in /proc)."""
        try:
            status = Path(f"/proc/{self.init_pid}/status").read_text()
        except OSError:
            return False
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) & (1 << (signum - 1)))

    @classmethod
    def attach(cls, mode: str, proc: subprocess.Popen[bytes]) -> Supervised:
        """Wrap an init that the test started itself with its own Popen arguments."""
        run = cls.__new__(cls)
        run.mode, run.proc, run._init_pid, run._err = mode, proc, None, b""
        return run

    def wait_event(self, name: str) -> dict[str, Any]:
        """Read our stderr line by line until smsupervise logs the event ``name`` (dumb-init's
        readline style: the supervisor's own output is the synchronisation); returns it. Lines
        read here are kept and handed back by ``wait``."""
        assert self.proc.stderr is not None
        while True:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"smsupervise exited before logging {name}: {self._err[-2000:]!r}")
            self._err += line
            for record in events(line):
                if record["event"] == name:
                    return record

    def wait(self, timeout: float = 60) -> tuple[int, bytes, bytes]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, self._err + (err or b"")

    def signal_when(
        self, ready: Callable[[], object], what: str, signum: int = 15, timeout: float = 120
    ) -> tuple[int, bytes, bytes]:
        """Send ``signum`` once ``ready()`` is truthy (polled with a deadline), then wait for the
        end; a run that does not end (or a test that fails first) is killed, never left behind."""
        try:
            sleep_until(ready, what=what)
            self.signal(signum)
            return self.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.kill()

    def kill(self) -> None:
        """SIGKILL the init and everything below it, then collect it."""
        from smsupervise.linux.proctree import descendants

        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        with contextlib.suppress(Exception):
            self.proc.communicate(timeout=10)


def events(stream: bytes) -> list[dict[str, Any]]:
    """smsupervise's own events in a captured stream (lines with "logger": "smsupervise")."""
    found = []
    for line in stream.splitlines():
        if line.startswith(b"{"):
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict) and record.get("logger") == "smsupervise":
                    found.append(record)
    return found


def event_names(stream: bytes) -> list[str]:
    return [record["event"] for record in events(stream)]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """Each process test runs with smsupervise as a subreaper and as PID 1."""
    return str(request.param)


@pytest.fixture
def start(mode: str) -> Iterator[Callable[..., Supervised]]:
    """Start smsupervise with the given arguments in the current mode; killed at teardown."""
    started: list[Supervised] = []

    def launch(*args: str, **popen: Any) -> Supervised:
        run = Supervised(mode, supervisor_argv(mode, *args), **popen)
        started.append(run)
        return run

    yield launch
    for run in started:
        if run.proc.poll() is None:
            run.kill()


def helper(name: str) -> str:
    return str(HELPERS / name)


@pytest.fixture(scope="session")
def podman_session() -> Iterator[Any]:
    """Podman with its storage in a scratch directory, for the whole session, removed at its end
    (one for tests/container and the local runner's ``--image`` tests: the image is built once)."""
    from tests.container.podman import Podman

    podman = Podman.scratch()
    yield podman
    podman.discard()


@pytest.fixture(scope="session")
def image(podman_session: Any) -> str:
    """Dockerfile.example built on the local base image with smsupervise from this checkout."""
    from tests.container.podman import Unavailable, ensure_image

    try:
        return ensure_image(podman_session)
    except Unavailable as missing:
        pytest.skip(str(missing))


@pytest.fixture
def s3() -> Iterator[Any]:
    """A stand-in S3 endpoint (tests/s3server.py) on localhost; skipped without boto3 (the ``s3``
    extra: ``make s3``), which every ``s3://`` path of smsupervise needs."""
    pytest.importorskip("boto3", reason="boto3 is not installed: `make s3` (pip install -e '.[s3]')")
    from tests import s3server

    server = s3server.serve()
    yield server
    server.store.released.set()
    server.shutdown()
    server.server_close()
