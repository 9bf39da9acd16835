"""Pipe sizes: every pipe smsupervise makes or reads is raised to 1 MiB where the kernel allows."""

from __future__ import annotations

import contextlib
import fcntl

PIPE_SIZE = 1 << 20  # /proc/sys/fs/pipe-max-size by default; more needs CAP_SYS_RESOURCE


def raise_pipe_size(fd: int, size: int = PIPE_SIZE) -> int:
    """Grow a pipe or FIFO towards ``size``; return the size it has. EPERM (over pipe-max-size, or
    the user's pipe pages used up) keeps the current size."""
    with contextlib.suppress(OSError):
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    with contextlib.suppress(OSError):
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    return 0
