"""Our own stdout/stderr as non-blocking writers with backpressure.

A PID 1 that blocks in ``write`` (a slow log driver: docker's default ``mode=blocking``) would stop
forwarding signals and reaping. So writes never block the loop: what the fd does not take at once is
buffered, the loop waits for writability, and above ``high_water`` buffered bytes the readers of
the child's pipes pause, which blocks the child instead (nothing is dropped).

A terminal is left blocking (O_NONBLOCK would be shared with the shell that owns it, and people
write slowly anyway); pipes and sockets are switched to O_NONBLOCK and restored by ``finish``.

Nothing here may hang the exit or take the job with it: when the reader goes away (EPIPE; SIGPIPE is
ignored by smsupervise) what cannot be written is dropped and counted (per ``source``: which of the
child's streams, or our events, it came from); our own events are dropped
(counted) rather than buffered without limit when the reader stalls; and the final flush after the
job has exited (``finish``) has a deadline and gives way to a stop signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import time
from collections import deque
from collections.abc import Callable
from typing import Any

EVENTS_CAP = 4 << 20  # our own events beyond this much buffered output are dropped, counted
EVENTS = "events"  # the source name of our own events in ``lost``
FINISH_SLICE = 0.05  # the final flush looks for a stop signal at least this often


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
        self.dropped_bytes = 0  # written after the reader went away, or left at the deadline
        self.dropped_events = 0  # our own events dropped while the reader stalled
        self.lost: dict[str, list[int]] = {}  # source -> [records, bytes] dropped
        self._held: deque[list[Any]] = deque()  # [source, bytes] of what the buffer holds, oldest first
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

    def write_event(self, data: bytes) -> None:
        """One of our own events: written like the child's output, but never buffered past
        ``EVENTS_CAP`` (the child is paused by backpressure; our events cannot be, so they drop)."""
        if len(self._buffer) >= EVENTS_CAP:
            self.dropped_events += 1
            self._lose(EVENTS, data)
            return
        self.write(data, EVENTS)

    def write(self, data: bytes, source: str = "") -> None:
        """Write ``data`` (what the buffer holds first); ``source`` names it in ``lost``."""
        if self.broken:
            self._lose(source, data)
            return
        if not data:
            return
        if self._buffer:
            self._buffer += data
            self._hold(source, len(data))
            return
        written = self._try_write(data, source)
        if written < len(data):
            self._buffer += memoryview(data)[written:]
            self._hold(source, len(data) - written)
            self._loop.add_writer(self.fd, self._on_writable)

    def _try_write(self, data: bytes | bytearray, source: str = "") -> int:
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0
        except InterruptedError:
            return 0
        except OSError:
            self.broken = True  # nobody reads our output any more: there is nowhere to put it
            if data is not self._buffer:
                self._lose(source, data)
            self._lose_buffer()
            return len(data)

    def _hold(self, source: str, size: int) -> None:
        """The buffer grew by ``size`` bytes from ``source`` (one entry per run of one source)."""
        if self._held and self._held[-1][0] == source:
            self._held[-1][1] += size
        else:
            self._held.append([source, size])

    def _lose(self, source: str, data: bytes | bytearray) -> None:
        self.dropped_bytes += len(data)
        counts = self.lost.setdefault(source, [0, 0])
        counts[0] += data.count(b"\n")
        counts[1] += len(data)

    def _lose_buffer(self) -> None:
        """Everything buffered is dropped, counted against the sources it came from."""
        at = 0
        for source, size in self._held:
            self._lose(source, self._buffer[at : at + size])
            at += size
        self._held.clear()
        self._buffer.clear()

    def _consumed(self, written: int) -> None:
        """``written`` bytes left the front of the buffer."""
        del self._buffer[:written]
        while written and self._held:
            head = self._held[0]
            if head[1] > written:
                head[1] -= written
                return
            written -= head[1]
            self._held.popleft()

    def _on_writable(self) -> None:
        written = self._try_write(self._buffer)
        self._consumed(written)
        if not self._buffer:
            self._loop.remove_writer(self.fd)
        if not self.congested and self._waiters:
            waiters, self._waiters = self._waiters, []
            for callback in waiters:
                callback()

    def detach(self) -> None:
        """Leave the loop (it is about to close): what is buffered stays for ``finish``."""
        with contextlib.suppress(Exception):
            self._loop.remove_writer(self.fd)

    def finish(self, deadline: float, interrupted: Callable[[], bool] = lambda: False) -> None:
        """After the loop: write what is buffered until the reader has taken it all, ``deadline``
        (``time.monotonic()``) passes, or ``interrupted()`` (a stop signal) says to leave; what is
        left is counted in ``dropped_bytes``. Then the fd's flags are restored."""
        self.detach()
        while self._buffer and not self.broken and not interrupted():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(OSError, ValueError):
                select.select([], [self.fd], [], min(left, FINISH_SLICE))
            written = self._try_write(self._buffer)
            self._consumed(written)
        self._lose_buffer()
        if self._flags is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.fd, fcntl.F_SETFL, self._flags)
            self._flags = None
