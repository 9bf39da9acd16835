"""Pipe sizes and the kernel's pipe limits: every pipe smsupervise makes or reads is raised to 1 MiB
where the kernel allows, and the relay's rings are sized from what the kernel says is left (pipe(7))."""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import NamedTuple

PIPE_SIZE = 1 << 20  # /proc/sys/fs/pipe-max-size by default; more needs CAP_SYS_RESOURCE
DEFAULT_PIPE = 16 * 4096  # a new pipe's size (16 pages), assumed for pipes we cannot ask
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24


def raise_pipe_size(fd: int, size: int = PIPE_SIZE) -> int:
    """Grow a pipe or FIFO towards ``size``; return the size it has. EPERM (over pipe-max-size, or
    the user's pipe pages used up) keeps the current size."""
    with contextlib.suppress(OSError):
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    with contextlib.suppress(OSError):
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    return 0


class PipeLimits(NamedTuple):
    """The kernel's pipe limits as they apply to this process."""

    max_size: int  # fs/pipe-max-size: the most one pipe may hold without CAP_SYS_RESOURCE
    user_soft: int  # fs/pipe-user-pages-soft in bytes: all of one user's pipes together; 0: none
    exempt: bool  # CAP_SYS_RESOURCE or CAP_SYS_ADMIN: the per-user limit does not apply
    in_use: int  # bytes of pipe buffers held by this uid's processes that we can see (an estimate)


def _read_int(path: str, default: int) -> int:
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return default


def _exempt(proc: str) -> bool:
    """Whether our effective capabilities lift the per-user pipe limit (fs/pipe.c)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open(f"{proc}/self/status", encoding="ascii") as handle:
            line = next(line for line in handle if line.startswith("CapEff:"))
        caps = int(line.split()[1], 16)
        return bool(caps & ((1 << CAP_SYS_ADMIN) | (1 << CAP_SYS_RESOURCE)))
    return False


def _pipes_in_use(proc: str, uid: int) -> int:
    """Bytes held by the pipes open in this uid's processes (ours measured, others' assumed 64 KiB).
    Processes outside our PID namespace, and FIFOs, are not seen: headroom covers them."""
    seen: set[str] = set()
    total = 0
    me = str(os.getpid())
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(f"{proc}/{pid}").st_uid != uid:
                continue
            for fd in os.listdir(f"{proc}/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"{proc}/{pid}/fd/{fd}")
                    if link.startswith("pipe:") and link not in seen:
                        seen.add(link)
                        total += _size_of(int(fd)) if pid == me else DEFAULT_PIPE
    return total


def _size_of(fd: int) -> int:
    with contextlib.suppress(OSError):
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    return DEFAULT_PIPE


def read_limits(proc: str = "/proc") -> PipeLimits:
    """The limits from ``/proc/sys/fs`` and our capabilities; what our uid uses if we are limited."""
    exempt = _exempt(proc)
    soft = _read_int(f"{proc}/sys/fs/pipe-user-pages-soft", 0) * os.sysconf("SC_PAGE_SIZE")
    limited = soft > 0 and not exempt
    return PipeLimits(
        max_size=_read_int(f"{proc}/sys/fs/pipe-max-size", PIPE_SIZE),
        user_soft=soft,
        exempt=exempt,
        in_use=_pipes_in_use(proc, os.getuid()) if limited else 0,
    )
