"""Podman plumbing for tests that run smsupervise's image for real: build once, run, stop, exec, pty.

Importable by any test (the container scenarios here, the local runner's and the distributed
issue's ``--image`` tests): ``from tests.container.podman import Podman, ensure_image``.

* The base image is a Debian root filesystem made by ``mmdebstrap`` from the machine's apt sources,
  cached as a ``rootfs-*.tar`` in ``cache_dir()`` (``$SMSUPERVISE_CONTAINER_CACHE``, else
  ``$XDG_CACHE_HOME/smsupervise-container``, else ``~/.cache/smsupervise-container``), so only the
  first run on a machine pays for it; ``podman import`` turns it into ``BASE_IMAGE``.
* ``EXAMPLE_IMAGE`` is ``Dockerfile.example`` built on it, with smsupervise from a wheel of this
  checkout (``pip wheel``), as a user builds it.
* Podman's storage lives in a scratch directory (``--root``/``--runroot``), never the machine's,
  and runs with the ``containers.conf`` that these VMs need (shared/docs/containers.md): ulimits
  within the VM's hard limits (no CAP_SYS_RESOURCE) and runc (crun refuses hybrid cgroups).
* Output is read line by line as it comes, so tests wait for events, never for time.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

ROOT = Path(__file__).resolve().parent.parent.parent
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "procps")
BASE_PYTHON = (3, 11)  # bookworm's python3: the wheels built here must match it
BASE_IMAGE = f"localhost/smsupervise-base:{SUITE}"
EXAMPLE_IMAGE = "localhost/smsupervise-example:test"
NAME_PREFIX = "ctr-"
CONTAINERS_CONF = """\
# What podman needs on these VMs (shared/docs/containers.md): the VM's hard nofile limit is below
# podman's default and it lacks CAP_SYS_RESOURCE to raise it; crun refuses hybrid cgroups.
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""
T = TypeVar("T")


class Unavailable(Exception):
    """Something the container tests need is missing here (a skip, not a failure)."""


def cache_dir() -> Path:
    """Where the base root filesystem is kept between runs."""
    explicit = os.environ.get("SMSUPERVISE_CONTAINER_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "smsupervise-container"


def problem() -> str | None:
    """Why podman cannot run containers here, or None when it can (what a skip says)."""
    if not sys.platform.startswith("linux"):
        return "container tests need Linux"
    if os.geteuid() != 0:
        return "container tests run rootful podman: run them as root"
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install podman runc mmdebstrap)"
    return None


def deadline_wait(predicate: Callable[[], T], timeout: float, what: str, cond: threading.Condition) -> T:
    """Wait on ``cond`` until ``predicate`` is truthy; fail at the deadline naming ``what``."""
    end = time.monotonic() + timeout
    with cond:
        while True:
            value = predicate()
            if value:
                return value
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            cond.wait(left)


class Podman:
    """The podman command with scratch storage and this VM's containers.conf."""

    def __init__(self, scratch: Path) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        self.scratch = scratch
        self.conf = scratch / "containers.conf"
        self.conf.write_text(CONTAINERS_CONF)
        (scratch / "tmp").mkdir(exist_ok=True)  # buildah's temporary files, removed with the rest
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf), "TMPDIR": str(scratch / "tmp")}
        self.prefix = ["podman", "--root", str(scratch / "store"), "--runroot", str(scratch / "run")]
        self.names: list[str] = []
        self.serial = itertools.count()
        self.containers: list[Container] = []
        self.sessions: list[PtySession] = []

    @classmethod
    def scratch(cls) -> Podman:
        """A podman with fresh storage in a new directory, for ``discard`` to remove entirely."""
        return cls(Path(tempfile.mkdtemp(prefix="smsupervise-podman-", dir="/var/tmp")))

    def discard(self) -> None:
        """Remove every container, unmount what podman left mounted in the storage, delete it."""
        self.cleanup()
        root = str(self.scratch) + "/"
        with open("/proc/self/mountinfo") as table:
            mounted = [line.split()[4] for line in table]
        for point in sorted((m for m in mounted if m.startswith(root)), reverse=True):
            subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
        # rm (C) is several times faster than shutil.rmtree on the image layers; never crosses a mount.
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.scratch)], check=False, timeout=300)

    def argv(self, *args: str) -> list[str]:
        return [*self.prefix, *args]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run one podman command to completion; ``check`` fails with its stderr."""
        done = subprocess.run(
            self.argv(*args), env=self.env, capture_output=True, timeout=timeout, check=False, input=input
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr.decode(errors='replace')}"
            )
        return done

    def has_image(self, tag: str) -> bool:
        return self("image", "exists", tag, check=False).returncode == 0

    def name(self, what: str) -> str:
        """A fresh container name (``ctr-...``), removed by ``cleanup``."""
        name = f"{NAME_PREFIX}{what}-{os.getpid()}-{next(self.serial)}"
        self.names.append(name)
        return name

    def cleanup(self) -> None:
        """Remove every container this object named, running or not."""
        if self.names:
            self("rm", "--force", "--ignore", "--time", "0", *self.names, check=False, timeout=120)
        self.names.clear()
        for container in self.containers:  # collect the `podman run` clients of the removed containers
            try:
                container.wait(timeout=60)
            except subprocess.TimeoutExpired:
                container.proc.kill()
                container.proc.wait()
        self.containers.clear()
        for session in self.sessions:
            session.close(timeout=30)
        self.sessions.clear()

    def run(
        self,
        image: str,
        *command: str,
        options: Sequence[str] = (),
        timeout: float = 120,
        network: str = "none",
    ) -> Result:
        """``podman run --rm IMAGE COMMAND`` to completion: its exit code and output."""
        name = self.name("run")
        done = subprocess.run(
            self.argv("run", "--rm", "--network", network, "--name", name, *options, image, *command),
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def start(
        self, image: str, *command: str, options: Sequence[str] = (), what: str = "job", network: str = "none"
    ) -> Container:
        """``podman run`` attached (not ``-d``), its output read line by line as it comes.

        ``network``: ``none`` by default; a network made with ``self("network", "create", NAME)``
        connects containers to each other (distributed training: ``--hostname algo-1`` ...).
        """
        name = self.name(what)
        argv = self.argv("run", "--rm", "--network", network, "--name", name, *options, image, *command)
        container = Container(self, name, argv)
        self.containers.append(container)
        return container

    def stop(self, name: str, timeout: int, wait: float = 300) -> None:
        """``podman stop -t TIMEOUT``: SIGTERM to PID 1, SIGKILL TIMEOUT seconds later."""
        self("stop", "-t", str(timeout), name, timeout=wait)

    def kill(self, name: str, sig: str) -> None:
        self("kill", "--signal", sig, name)

    def exec(self, name: str, *command: str, options: Sequence[str] = ()) -> Result:
        """``podman exec`` in a running container (a process beside PID 1's tree, not under it)."""
        done = self("exec", *options, name, *command, check=False)
        return Result(done.returncode, done.stdout, done.stderr)

    def pty(self, *args: str) -> PtySession:
        """Any podman command (e.g. ``run -it IMAGE bash``) on a real pseudo-terminal."""
        session = PtySession(self.argv(*args), self.env)
        self.sessions.append(session)
        return session


class Result:
    """A finished container: exit code and captured output."""

    def __init__(self, code: int, out: bytes, err: bytes) -> None:
        self.code, self.out, self.err = code, out, err

    def events(self) -> list[dict[str, Any]]:
        return events(self.err.splitlines())

    def records(self, stream: str = "stdout") -> list[dict[str, Any]]:
        return records((self.out if stream == "stdout" else self.err).splitlines())


def records(lines: Iterable[bytes]) -> list[dict[str, Any]]:
    """Every JSON object among ``lines`` (smsupervise's events and the child's records)."""
    found = []
    for line in lines:
        if line.startswith(b"{"):
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict):
                    found.append(record)
    return found


def events(lines: Iterable[bytes]) -> list[dict[str, Any]]:
    """smsupervise's own events among ``lines``."""
    return [record for record in records(lines) if record.get("logger") == "smsupervise"]


class Container:
    """An attached ``podman run``: every output line kept as it arrives, waited on by predicate."""

    def __init__(self, podman: Podman, name: str, argv: list[str]) -> None:
        self.podman = podman
        self.name = name
        self.proc = subprocess.Popen(
            argv, env=podman.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        self.cond = threading.Condition()
        self.readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True) for stream in self.lines
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: str) -> None:
        pipe = getattr(self.proc, stream)
        with pipe:
            for line in iter(pipe.readline, b""):
                with self.cond:
                    self.lines[stream].append(line.rstrip(b"\n"))
                    self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def events(self) -> list[dict[str, Any]]:
        with self.cond:
            return events(list(self.lines["stderr"]))

    def records(self, stream: str) -> list[dict[str, Any]]:
        with self.cond:
            return records(list(self.lines[stream]))

    def wait_for_event(self, name: str, timeout: float = 60, **fields: object) -> dict[str, Any]:
        """The first smsupervise event called ``name`` whose fields match ``fields``."""

        def found() -> dict[str, Any] | None:
            for event in events(self.lines["stderr"]):
                if event["event"] == name and all(event.get(k) == v for k, v in fields.items()):
                    return event
            self._check_running(f"event {name} {fields}")
            return None

        return deadline_wait(found, timeout, f"event {name} {fields}", self.cond)

    def wait_for_line(self, pattern: str, stream: str = "stderr", timeout: float = 60) -> bytes:
        """The first raw output line matching the regular expression ``pattern``."""
        regex = re.compile(pattern.encode())

        def found() -> bytes | None:
            line = next((line for line in self.lines[stream] if regex.search(line)), None)
            if line is None:
                self._check_running(f"a line matching {pattern!r}")
            return line

        return deadline_wait(found, timeout, f"a {stream} line matching {pattern!r}", self.cond)

    def _check_running(self, what: str) -> None:
        """Fail at once when the container is gone and all its output is read: ``what`` never comes."""
        if self.proc.poll() is not None and not any(reader.is_alive() for reader in self.readers):
            raise AssertionError(f"the container exited before {what}:\n{self.output()}")

    def wait(self, timeout: float = 180) -> int:
        """The exit code of ``podman run`` (the container's), once all its output is read."""
        code = self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=30)
        return code

    def output(self) -> str:
        """Everything seen so far, for failure messages."""
        with self.cond:
            seen = [(stream, line) for stream, lines in self.lines.items() for line in lines]
        return "\n".join(f"{stream}: {line.decode(errors='replace')}" for stream, line in seen)


class PtySession:
    """A command on a real pseudo-terminal: ``expect`` output, ``send`` keystrokes, ``close``."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.seen = b""

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[bytes]:
        """Read until ``pattern`` (a regular expression) shows up in the output so far."""
        regex = re.compile(pattern.encode())
        end = time.monotonic() + timeout
        while not (match := regex.search(self.seen)):
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {pattern!r}: {self.seen!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: the other side closed
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"pty closed before {pattern!r}; saw {self.seen!r}")
                self.seen += chunk
        return match

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self, timeout: float = 30) -> int:
        """Wait for the command to end (after what was sent ended it) and close the terminal."""
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            if self.master >= 0:
                os.close(self.master)
                self.master = -1


def base_rootfs() -> Path:
    """The cached root filesystem of the base image, made by mmdebstrap on first use."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    mirrors = [str(sources)] if sources.is_file() else []  # the machine's apt sources, else the default
    argv = ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE]
    key = hashlib.sha256(orjson.dumps([argv, [Path(m).read_text() for m in mirrors]])).hexdigest()[:12]
    tar = cache_dir() / f"rootfs-{SUITE}-{key}.tar"
    if tar.is_file():
        return tar
    if shutil.which("mmdebstrap") is None:
        raise Unavailable(f"mmdebstrap is not installed and {tar} is not cached")
    tar.parent.mkdir(parents=True, exist_ok=True)
    partial = tar.with_name(f"partial-{os.getpid()}-{tar.name}")  # mmdebstrap: a *.tar name makes a tar
    try:
        subprocess.run([*argv, str(partial), *mirrors], check=True, timeout=900, capture_output=True)
        partial.replace(tar)  # atomic: a cache hit is always a whole tar
    except subprocess.CalledProcessError as error:
        raise AssertionError(f"mmdebstrap failed:\n{error.stderr.decode(errors='replace')}") from error
    finally:
        partial.unlink(missing_ok=True)
    return tar


PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]


def build_context(scratch: Path) -> Path:
    """A build context as a user makes it: Dockerfile.example, examples/, and a wheel directory."""
    context = scratch / "context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copy(ROOT / "Dockerfile.example", context / "Dockerfile.example")
    shutil.copytree(ROOT / "examples", context / "examples")
    subprocess.run(
        [*PIP_WHEEL, "--wheel-dir", str(context / "wheels"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return context


def ensure_image(podman: Podman, tag: str = EXAMPLE_IMAGE) -> str:
    """``tag`` built from Dockerfile.example on the local base image (each step only when missing)."""
    if not podman.has_image(BASE_IMAGE):
        podman("import", "--quiet", str(base_rootfs()), BASE_IMAGE, timeout=600)
    if not podman.has_image(tag):
        if sys.version_info[:2] != BASE_PYTHON:
            raise Unavailable(
                f"the wheels for the image are built with this Python {sys.version_info[0]}."
                f"{sys.version_info[1]}, the {SUITE} base has {BASE_PYTHON[0]}.{BASE_PYTHON[1]}: "
                "run the container tests from a venv of that version"
            )
        context = build_context(podman.scratch)
        podman(
            "build", "--quiet", "--network", "none", "--file", str(context / "Dockerfile.example"),
            "--build-arg", f"BASE={BASE_IMAGE}", "--build-arg", "SMSUPERVISE_WHEELS=wheels",
            "--tag", tag, str(context), timeout=600,
        )  # fmt: skip
    return tag


class MlTree:
    """An ``/opt/ml`` tree on the host, bind-mounted into a container the way SageMaker mounts it.

    SageMaker mounts ``input``, ``model``, ``output`` and ``checkpoints`` (not ``code``: the image's
    ``/opt/ml/code`` stays visible), so ``mounts()`` does the same. ``owner`` chowns it all, for a
    container that runs as another user.
    """

    SUBDIRS = ("input", "model", "output", "checkpoints")

    def __init__(
        self,
        path: Path,
        hyperparameters: dict[str, str] | None = None,
        channels: dict[str, str] | None = None,
        data: bool = True,
    ) -> None:
        self.path = path
        config = path / "input" / "config"
        config.mkdir(parents=True)
        for sub in self.SUBDIRS:
            (path / sub).mkdir(exist_ok=True)
        (path / "input" / "data").mkdir()
        example = ROOT / "examples" / "job"
        if data:
            shutil.copytree(example / "data", path / "input" / "data", dirs_exist_ok=True)
        shutil.copy(example / "config" / "resourceconfig.json", config)
        modes = channels if channels is not None else {"train": "File", "validation": "File"}
        self.write_config("inputdataconfig.json", {ch: {"TrainingInputMode": m} for ch, m in modes.items()})
        self.write_config("hyperparameters.json", hyperparameters or {})

    def write_config(self, name: str, value: object) -> None:
        (self.path / "input" / "config" / name).write_bytes(orjson.dumps(value))

    def chown(self, uid: int, gid: int) -> None:
        for root, dirs, files in os.walk(self.path):
            for entry in [root, *(os.path.join(root, name) for name in dirs + files)]:
                os.lchown(entry, uid, gid)

    def mounts(self) -> list[str]:
        return [f"--volume={self.path / sub}:/opt/ml/{sub}" for sub in self.SUBDIRS]

    def checkpoints(self) -> list[str]:
        return sorted(p.name for p in (self.path / "checkpoints").glob("ckpt-*.json"))

    def read(self, relative: str) -> str:
        return (self.path / relative).read_text()
