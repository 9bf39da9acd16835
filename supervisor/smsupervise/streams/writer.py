"""Our own stdout/stderr as non-blocking writers with backpressure.

A PID 1 that blocks in ``write`` (a slow log driver: docker's default ``mode=blocking``) would stop
forwarding signals and reaping. So writes never block the loop: what the fd does not take at once is
buffered, the loop waits for writability, and above ``high_water`` buffered bytes the readers of
the child's pipes pause, which blocks the child instead (nothing is dropped).

A terminal is left blocking (O_NONBLOCK would be shared with the shell that owns it, and people
write slowly anyway); pipes and sockets are switched to O_NONBLOCK and restored on ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable

from smsupervise.streams.events import write_all


class Output:
    """One of our output fds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, high_water: int = 1 << 20) -> None:
        self.fd = fd
        self._loop = loop
        self._buffer = bytearray()
        self.high_water = high_water
        self._waiters: list[Callable[[], None]] = []
        self._flags: int | None = None
        self.broken = False
        try:
            if not os.isatty(fd):
                flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                if not flags & os.O_NONBLOCK:
                    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
                    self._flags = flags
        except OSError:  # closed or unusual fd: plain blocking writes
            self._flags = None

    @property
    def congested(self) -> bool:
        return len(self._buffer) >= self.high_water

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the buffer is below the high-water mark again."""
        if self.congested:
            self._waiters.append(callback)
        else:
            self._loop.call_soon(callback)

    def write(self, data: bytes) -> None:
        if self.broken or not data:
            return
        if self._buffer:
            self._buffer += data
            return
        written = self._try_write(data)
        if written < len(data):
            self._buffer += memoryview(data)[written:]
            self._loop.add_writer(self.fd, self._on_writable)

    def _try_write(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0
        except InterruptedError:
            return 0
        except (BrokenPipeError, OSError):
            self.broken = True  # nobody reads our output any more: there is nowhere to put it
            self._buffer.clear()
            return len(data)

    def _on_writable(self) -> None:
        written = self._try_write(self._buffer)
        del self._buffer[:written]
        if not self._buffer:
            self._loop.remove_writer(self.fd)
        if not self.congested and self._waiters:
            waiters, self._waiters = self._waiters, []
            for callback in waiters:
                callback()

    def close(self) -> None:
        """Write what is buffered (blocking), restore the fd's flags."""
        with contextlib.suppress(Exception):
            self._loop.remove_writer(self.fd)
        if self._flags is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.fd, fcntl.F_SETFL, self._flags)
            self._flags = None
        if self._buffer and not self.broken:
            with contextlib.suppress(OSError):
                write_all(self.fd, bytes(self._buffer))
        self._buffer.clear()
