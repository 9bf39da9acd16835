"""The control socket until someone connects: bound with the stdlib before the loop starts, and the
server (``debug.service``, ``control``, ``protocol``) imported only when the first connection arrives.

A run nobody looks into pays for one listening socket and this module, not for the server: exec
mode must start within 1.2x of a bare Python (benchmarks/pid1.py). The socket is owner-only (0600,
0660 for a reader group, in a 0700/0710 directory of its own at a default path) and close-on-exec
(Python's default, PEP 446), so it never reaches the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Mapping
from typing import TYPE_CHECKING

from smsupervise.errors import UsageError

if TYPE_CHECKING:
    from smsupervise.core.plugins import JobControl
    from smsupervise.debug.service import DebugService
    from smsupervise.streams.events import EventLog

SOCKET_NAME = "control.sock"
# The socket's path in the job's environment. Not SMSUPERVISE_CONTROL_SOCKET: a smsupervise nested
# in the job would read that as its own --control-socket and find it taken.
JOB_SOCKET_VARIABLE = "SMSUPERVISE_DEBUG_SOCKET"


def candidate_paths(env: Mapping[str, str], uid: int, pid: int) -> tuple[str, ...]:
    """Where the default socket goes, best first: /run, then $XDG_RUNTIME_DIR, then /tmp; last, a
    name of this process's own in /tmp, for when other smsupervise processes (sharing /run and
    /tmp: no container of their own) hold all the shared names."""
    paths = [os.path.join("/run/smsupervise", SOCKET_NAME)]
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        paths.append(os.path.join(runtime, "smsupervise", SOCKET_NAME))
    paths.append(os.path.join(f"/tmp/smsupervise-{uid}", SOCKET_NAME))
    paths.append(os.path.join(f"/tmp/smsupervise-{uid}", f"control-{pid}.sock"))
    return tuple(paths)


def private_dir(directory: str, uid: int, group: int | None = None) -> None:
    """Create ``directory`` mode 0700 (0710 for a reader group), or check that an existing one is
    ours and that nobody else may write into it."""
    with contextlib.suppress(FileExistsError):
        os.makedirs(directory, mode=0o700)
        if group is not None:
            os.chown(directory, -1, group)
            os.chmod(directory, 0o710)  # noqa: S103 - the reader group may reach the socket, not list
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o022:
        raise UsageError(
            f"control socket directory {directory} is not a private directory of uid {uid} "
            f"(owner {info.st_uid}, mode {stat.filemode(info.st_mode)}): remove it, or choose another "
            "path with --control-socket PATH"
        )


def bind(path: str, uid: int, private: bool = False, group: int | None = None) -> socket.socket:
    """A listening socket at ``path``, mode 0600 (0660 with ``group``); ``private``: in a directory
    made for it. A stale socket (nobody listening) is replaced; a live one is refused."""
    if private:
        private_dir(os.path.dirname(path), uid, group)
    if _alive(path):
        raise UsageError(
            f"control socket {path} is in use by another running smsupervise: "
            "give this one its own with --control-socket PATH (or none)"
        )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # close-on-exec: PEP 446
    try:
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        if group is not None:
            os.chown(path, -1, group)
        os.chmod(path, 0o600 if group is None else 0o660)
        sock.listen(16)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def choose_and_bind(
    setting: str | None, env: Mapping[str, str], uid: int, group: int | None = None
) -> socket.socket | None:
    """``--control-socket``: ``none`` turns it off, a path is used as is, no value tries the defaults.

    Raises ``UsageError`` (for an explicit path) or returns None after every default failed.
    """
    if setting == "none":
        return None
    if setting:
        try:
            return bind(setting, uid, group=group)
        except OSError as error:
            raise UsageError(
                f"--control-socket {setting}: {error.strerror or error}; choose a writable path or none"
            ) from None
    for path in candidate_paths(env, uid, os.getpid()):
        with contextlib.suppress(OSError, UsageError):
            return bind(path, uid, private=True, group=group)
    return None


def _alive(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def bind_for(
    settings_socket: str | None, group: int | None, env: Mapping[str, str], log: EventLog
) -> socket.socket | None:
    """Bind the control socket before the loop starts (a bad explicit path is a UsageError)."""
    sock = choose_and_bind(settings_socket, env, os.getuid(), group)
    if sock is None and settings_socket != "none":
        log.warning(
            "control_socket_unavailable",
            impact="smsupervise-debug cannot reach this run (--pid N still works)",
            fix="give a writable path with --control-socket PATH",
        )
    return sock


def job_env(socket_path: str) -> dict[str, str]:
    """What the job learns about the socket: its path (for smsupervise-debug run inside the job),
    and where opted-in stacks go."""
    return {
        JOB_SOCKET_VARIABLE: socket_path,
        "SMSUPERVISE_STACKS_DIR": os.path.join(os.path.dirname(socket_path), "stacks"),
    }


class ControlSocket:
    """A ``Service`` of the Supervisor: listens on the bound socket and, at the first connection,
    imports the server and hands the socket (with that connection still pending) to it."""

    def __init__(self, sock: socket.socket, supervisor: JobControl, mode: str, group: int | None) -> None:
        self.sock = sock
        self.path = str(sock.getsockname())
        self.supervisor = supervisor
        self.mode = mode
        self.group = group
        self.served: DebugService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._first_connection)
        self.supervisor.log.info("control_socket_ready", path=self.path, uid=os.getuid())

    def _first_connection(self) -> None:
        """The listening fd is readable: the server takes it over (level-triggered, so its own
        reader sees the connection we have not accepted)."""
        assert self._loop is not None
        self._loop.remove_reader(self.sock.fileno())
        from smsupervise.debug.service import DebugService  # noqa: PLC0415 - at the first connection

        self.served = DebugService(self.sock, self.supervisor, self.mode, self.group)
        self.served.start()

    def close(self) -> None:
        """Stop listening and remove the socket file (the server's close once it runs)."""
        if self.served is not None:
            self.served.close()
            return
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.sock.close()
