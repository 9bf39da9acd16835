"""The work dir's own kernel resources: the lock that makes it one run's, and the space kept aside
for the run's last describe.json.

``lock`` takes an flock on ``DIR/.smsupervise-local.lock`` (which then holds the run's pid); the
kernel releases it when the process ends, however it ends, so a killed run never leaves the dir
locked. The fd is close-on-exec (hosts never inherit it). ``Reserve`` is a file of ``RESERVE_BYTES``
allocated at the start; ``release`` frees it when the disk is full, so that the final status can
still be written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

LOCK_NAME = ".smsupervise-local.lock"
RESERVE_NAME = ".smsupervise-local.reserve"
RESERVE_BYTES = 1 << 20  # > the largest describe.json (100 hyperparameters of 2500 characters...)


class WorkDirBusy(Exception):
    """Another run holds the work dir."""


def check_free(work: str) -> None:
    """Raises WorkDirBusy, naming the holder's pid, when a live run holds ``work``'s lock; touches
    nothing (a dir or a lock file that is not there is free)."""
    try:
        fd = os.open(os.path.join(work, LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown (it is starting)"
        raise WorkDirBusy(
            f"{work} is in use by another smsupervise-local run (pid {holder}); wait for it to end, "
            "or give this run another --work-dir"
        ) from None
    finally:
        os.close(fd)


def lock(work: str) -> int:
    """Hold ``work`` for this process; returns the lock's fd. Raises WorkDirBusy naming the holder's
    pid (nothing else in ``work`` is touched)."""
    os.makedirs(work, exist_ok=True)
    fd = os.open(os.path.join(work, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown (it is starting)"
        os.close(fd)
        raise WorkDirBusy(
            f"{work} is in use by another smsupervise-local run (pid {holder}); wait for it to end, "
            "or give this run another --work-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class Reserve:
    """Space kept aside in ``work`` (nothing when there is no room even at the start)."""

    def __init__(self, work: str) -> None:
        self.path = os.path.join(work, RESERVE_NAME)
        with contextlib.suppress(OSError):
            fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
            )
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)

    def release(self) -> bool:
        """Free the space; whether there was any to free."""
        try:
            os.unlink(self.path)
        except OSError:
            return False
        return True
