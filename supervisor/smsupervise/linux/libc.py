"""The few libc calls Python has no binding for, through ctypes (imported only when needed)."""

from __future__ import annotations

import os
from collections.abc import Callable

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3


def set_child_subreaper() -> str | None:
    """Make this process a child subreaper; None, or the error text if the kernel refused."""
    import ctypes  # noqa: PLC0415

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def keep_heap() -> bool:
    """Stop glibc from returning freed heap to the kernel after every chunk of child output.

    The relay allocates and frees ~64-200 KiB per chunk; with glibc's defaults each free trims the
    heap top and the next chunk faults fresh pages in (logging.md: 15k brk calls per 500k lines).
    Raising M_TRIM_THRESHOLD (which also freezes the dynamic mmap threshold, so that is set too)
    makes the relay ~4x cheaper. Only this process is affected, not the child.
    """
    import ctypes  # noqa: PLC0415

    try:
        libc = ctypes.CDLL(None)
        mmap_ok = libc.mallopt(M_MMAP_THRESHOLD, 4 << 20) == 1
        return bool(libc.mallopt(M_TRIM_THRESHOLD, 32 << 20) == 1 and mmap_ok)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def splice_call() -> tuple[Callable[[int, None, int, None, int, int], int], Callable[[], int]]:
    """libc's ``splice(2)`` as it is, ``(fd_in, None, fd_out, None, len, flags)``: the bytes moved,
    or -1 with the error in the second function's ``errno``, EINTR included. ``os.splice`` retries
    EINTR in every thread but the main one, so a thread blocked in it cannot be woken by a signal;
    ctypes releases the GIL for the call."""
    import ctypes  # noqa: PLC0415

    libc = ctypes.CDLL(None, use_errno=True)
    call = libc.splice
    call.argtypes = (
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
    )
    call.restype = ctypes.c_ssize_t
    return call, ctypes.get_errno
