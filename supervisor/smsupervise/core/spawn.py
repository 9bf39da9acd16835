"""The only module that creates processes, signals them and holds their pidfds: ``posix_spawn``
into a new session and process group, with default signal dispositions and an empty signal mask;
``Child.send``/``send_to_pid`` are the only ``kill``/``killpg`` calls of the supervisor.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import stat
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from smsupervise.core.signals import default_dispositions
from smsupervise.core.status import ExitCode
from smsupervise.errors import SpawnError


class LaunchSpec(NamedTuple):
    """What to run: the argv, its environment and its working directory."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None = None  # None: ours


class StepKind(enum.Enum):
    """What a step is for: a preparation (pip install) whose failure ends the run before the main
    program starts, or the main program (training, serving, the command)."""

    PREPARE = "prepare"
    MAIN = "main"


class Step(NamedTuple):
    """One process to run to completion, with a label for people ("installing requirements.txt")."""

    kind: StepKind
    label: str  # display only: no decision reads it
    spec: LaunchSpec

    @property
    def is_main(self) -> bool:
        """The job itself (training, serving, the command), not a preparation step (pip)."""
        return self.kind is StepKind.MAIN


class Child(NamedTuple):
    """A started process and its group: its pid (also its process-group id) and a pidfd when the
    kernel has them. Signals to it go through ``send``; its pidfd is closed by ``close``."""

    pid: int
    pidfd: int | None
    argv: tuple[str, ...]

    @property
    def pgid(self) -> int:
        return self.pid

    def send(self, signum: int, to: str = "group") -> bool:
        """``signum`` to the whole process group (``to="group"``) or the child alone; False if gone."""
        try:
            if to == "group":
                os.killpg(self.pgid, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def group_alive(self) -> bool:
        """Whether any process of the child's group is still there (zombies count until reaped)."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def close(self) -> None:
        """Close the pidfd (once the child has been reaped or will not be watched)."""
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)

    def describe(self, to: str = "group") -> str:
        """Where ``send(..., to)`` goes, for events: ``process group 42`` or ``pid 42``."""
        return f"process group {self.pgid}" if to == "group" else f"pid {self.pid}"


def group_stopped(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is stopped by a signal (state ``T`` in /proc: SIGSTOP,
    SIGTSTP, a tty's SIGTTIN/SIGTTOU); a signal other than SIGKILL stays pending there until SIGCONT."""
    for entry in os.listdir("/proc"):  # OSError (no fd left) is the caller's
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                fields = file.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[0] == b"T" and int(fields[2]) == pgid:
            return True
    return False


def resume_group(pgid: int) -> str | None:
    """SIGCONT to group ``pgid`` if a process of it is stopped, so that the signals just sent
    there are delivered. Returns why it was sent (``"stopped"``, or ``"unknown"`` when /proc could
    not be read, e.g. no fd left: a SIGCONT too many beats a TERM never seen), None if it was not."""
    try:
        why = "stopped" if group_stopped(pgid) else None
    except OSError:
        why = "unknown"
    return why if why is not None and send_to_group(pgid, signal.SIGCONT) else None


def send_to_pid(pid: int, signum: int) -> bool:
    """``signum`` to one process that is not a child we started (a leftover); False if gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def send_to_group(pgid: int, signum: int) -> bool:
    """``signum`` to a process group we did not start (a launcher's rank that made its own session,
    as torchrun's do); False if it is gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def on_path(name: str, env: Mapping[str, str], cwd: str | None = None) -> Iterator[str]:
    """Every regular file called ``name`` in the directories of ``env``'s PATH, in order; relative
    entries (``.``, an empty one) are taken relative to ``cwd`` (the child's), else to ours."""
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(cwd or "", directory or ".", name)
        if os.path.isfile(candidate):
            yield candidate


def resolve(program: str, env: Mapping[str, str], cwd: str | None) -> str:
    """Find ``program`` the way a shell does; raises ``SpawnError`` with 127 or 126."""
    if "/" in program:
        path = program if os.path.isabs(program) or cwd is None else os.path.join(cwd, program)
        if not os.path.exists(path):
            raise SpawnError(program, "no such file", ExitCode.NOT_FOUND)
        if os.path.isdir(path):
            raise SpawnError(program, "is a directory, not a program", ExitCode.NOT_EXECUTABLE)
        if not os.access(path, os.X_OK):
            raise SpawnError(
                program, f"permission denied: make it executable (chmod +x {path})", ExitCode.NOT_EXECUTABLE
            )
        return path
    search = env.get("PATH", os.defpath)
    denied = ""
    for candidate in on_path(program, env, cwd):
        if os.access(candidate, os.X_OK):
            return candidate
        denied = denied or candidate
    if denied:
        raise SpawnError(
            program,
            f"permission denied: {denied} is not executable (chmod +x {denied})",
            ExitCode.NOT_EXECUTABLE,
        )
    raise SpawnError(program, f"command not found on PATH={search}", ExitCode.NOT_FOUND)


def _check_cwd(program: str, cwd: str) -> None:
    """The working directory exists, is a directory and we may enter it; else a SpawnError that says
    which (a directory this uid may not enter is not one that "does not exist")."""
    try:
        is_dir = stat.S_ISDIR(os.stat(cwd).st_mode)
    except FileNotFoundError:
        raise SpawnError(program, f"working directory {cwd} does not exist", ExitCode.NOT_FOUND) from None
    except OSError as error:
        raise SpawnError(
            program,
            f"working directory {cwd} cannot be reached by uid {os.geteuid()}: {error.strerror}"
            " (give that user search permission on it and every directory above it, or start elsewhere)",
            ExitCode.NOT_EXECUTABLE,
        ) from None
    if not is_dir:
        raise SpawnError(program, f"working directory {cwd} is not a directory", ExitCode.NOT_FOUND)
    if not os.access(cwd, os.X_OK, effective_ids=True):
        raise SpawnError(
            program,
            f"working directory {cwd} cannot be entered by uid {os.geteuid()}: permission denied"
            " (give that user search permission on it, or start elsewhere)",
            ExitCode.NOT_EXECUTABLE,
        )


def spawn(
    spec: LaunchSpec, stdout_fd: int | None = None, stderr_fd: int | None = None, terminal: int | None = None
) -> Child:
    """Start ``spec`` in its own session; ``stdout_fd``/``stderr_fd`` become its fds 1 and 2.

    With ``terminal`` (our controlling terminal's fd), the child stays in our session, in a process
    group of its own that becomes the terminal's foreground group (``hand_terminal``): a shell gets
    job control and Ctrl-C reaches the child's group, not us. Raises ``SpawnError`` (126/127) when
    the program cannot be run.
    """
    if spec.cwd is not None:
        _check_cwd(spec.argv[0], spec.cwd)
    path = resolve(spec.argv[0], spec.env, spec.cwd)
    actions: list[tuple[int, int, int]] = []
    if stdout_fd is not None:
        actions.append((os.POSIX_SPAWN_DUP2, stdout_fd, 1))
    if stderr_fd is not None:
        actions.append((os.POSIX_SPAWN_DUP2, stderr_fd, 2))
    env = {key: value for key, value in spec.env.items() if "=" not in key and "\0" not in key + value}
    # os.posix_spawn has no chdir action (glibc's addchdir_np is not exposed), so we move our own
    # cwd for the call. Nothing else runs meanwhile: posix_spawn holds the GIL, and no other thread
    # of ours uses relative paths.
    previous = os.getcwd() if spec.cwd else None
    try:
        if spec.cwd:
            os.chdir(spec.cwd)
        pid = os.posix_spawn(
            path,
            list(spec.argv),
            env,
            file_actions=actions,
            setsigdef=default_dispositions(),
            setsigmask=(),
            **({"setsid": True} if terminal is None else {"setpgroup": 0}),
        )
    except OSError as error:
        raise _spawn_error(spec.argv[0], error) from None
    finally:
        if previous is not None:
            os.chdir(previous)
    if terminal is not None:
        hand_terminal(terminal, pid)
    pidfd: int | None = None
    with contextlib.suppress(OSError, AttributeError):  # kernels before 5.3 have no pidfd_open
        pidfd = os.pidfd_open(pid)
    return Child(pid=pid, pidfd=pidfd, argv=spec.argv)


def hand_terminal(terminal: int, pgid: int, resume: bool = True) -> bool:
    """Make ``pgid`` the terminal's foreground group, then SIGCONT it: a child that touched the
    terminal before this (and was stopped by SIGTTIN/SIGTTOU) goes on. posix_spawn cannot run code
    in the child, so the parent does what a shell's child would do itself. False if not possible."""
    try:
        os.tcsetpgrp(terminal, pgid)  # we ignore SIGTTOU, so this works from the background too
    except OSError:
        return False
    if resume:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGCONT)
    return True


def controlling_terminal(fd: int = 0) -> int | None:
    """``fd`` when it is a terminal and our controlling one and we lead our session (PID 1 of
    ``docker run -it``, or a session started on a pty); else None: output goes through pipes."""
    try:
        if not os.isatty(fd) or os.getsid(0) != os.getpid():
            return None
        os.tcgetpgrp(fd)  # ENOTTY when it is not our controlling terminal
    except OSError:
        return None
    return fd


def _spawn_error(program: str, error: OSError) -> SpawnError:
    import errno  # noqa: PLC0415

    reason = os.strerror(error.errno) if error.errno else str(error)
    if error.errno == errno.ENOENT:
        return SpawnError(program, f"{reason} (a missing #! interpreter?)", ExitCode.NOT_FOUND)
    if error.errno == errno.ENOEXEC:
        return SpawnError(
            program,
            "exec format error: not a binary for this machine and no #! line",
            ExitCode.NOT_EXECUTABLE,
        )
    return SpawnError(program, reason, ExitCode.NOT_EXECUTABLE)


def watch_pidfd(pid: int) -> int | None:
    """A pidfd for a process we did not start (a launcher's rank), readable once it exits; the
    caller closes it. None when it is gone already (or the kernel has no pidfds)."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None
