"""The direct path while the child keeps up: one thread per channel, asleep in a blocking ``splice``.

When the ring is empty and the child's FIFO has room, each byte goes from the platform's FIFO
straight into the child's. That is the common case, and here it is done the way the C relay does
it: a thread that blocks in ``splice(upstream, child, 1 MiB, SPLICE_F_MOVE)`` and calls it again.
The kernel wakes it inside the pipe's own wait queue and it moves the pages before it returns: no
epoll, no edge to bookkeep, almost no Python between two splices. Measured (README, Pipe mode): one
event-driven thread for all channels, woken for every channel's every MiB, lost 10-20 % to N
blocking C relays on 2 cores, and a C program of that shape lost the same; a Python thread per
channel in a blocking splice reached the C relays.

The relay thread (relay.py) stays in charge: the pump (pump.py) hands the path over (``give``)
when it would splice directly, and takes it back when the feeder returns, which it does at EOF,
when the child closes its FIFO (EPIPE), on an unexpected error, or when it is recalled:

* the child has not read for ``READ_AHEAD_AFTER`` with data waiting upstream (it is computing):
  the pump reads ahead into the ring;
* the child closed its FIFO while the producer is idle (the same 10 ms look, a ``poll`` of the
  child's FIFO, sees POLLERR: no reader left; a feeder that is moving bytes gets EPIPE itself);
* the relay stops, or the channel fails.

**Recall** sets a flag and sends the thread a signal (``signal.pthread_kill``): SIGPIPE, which has
a handler that does nothing (``core.signals.thread_wake``), so a splice blocked on either pipe
returns EINTR, and the loop sees the flag. ``os.splice`` cannot be used for this: off the main
thread CPython retries EINTR, so the thread would go back to sleep; libc's ``splice`` is called
through ctypes (which releases the GIL for the call). A signal that lands between the flag check
and the call is lost, so the pump sends it again every ``REPOKE`` seconds until the feeder is back.
Splice moves whole pipe buffers under both pipes' locks and waits only before it has moved
anything, so a recall never splits or loses a byte.

Both FIFOs are blocking files (for pipe-to-pipe splice the kernel adds SPLICE_F_NONBLOCK when
either file is O_NONBLOCK); the pump's own splices ask for SPLICE_F_NONBLOCK and never block.
"""

from __future__ import annotations

import errno
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

from smsupervise.linux.libc import splice_call

SPLICE_F_MOVE = 1
Splice = Callable[[int, None, int, None, int, int], int]
REPOKE = 0.001  # a recalled feeder that has not returned is sent the signal again after this long
RECLAIM_WAIT = 0.5  # at a stop: how long to wait for it (it returns in microseconds; relay.stop waits 2 s)

EOF = "eof"  # the producer closed and everything was moved
CHILD_CLOSED = "child closed"  # EPIPE: the child closed its FIFO
RECALLED = "recalled"
FAILED = "failed"  # another errno (``Feeder.errno``)


class Fed(Protocol):
    """What the feeder reads and counts on: the pump it works for."""

    upstream: int
    downstream: int
    moved: int  # bytes delivered to the child (the feeder adds to it while it has the path)
    first: float | None  # when the first byte was available upstream (the feeder may set it)


class Feeder:
    """One channel's thread for the direct path; it serves one epoch's pump at a time.

    The relay thread calls ``give``, ``recall`` and ``reclaim``; ``why`` is None while the feeder
    has the path, and says why it returned once it has (then ``back`` is called, from the feeder's
    thread, to wake the relay thread).
    """

    def __init__(self, name: str, chunk: int, back: Callable[[], None], wake: int) -> None:
        self.chunk = chunk
        self.wake = wake  # the signal that interrupts its splice (core.signals.thread_wake)
        self._back = back
        self._inbox: queue.SimpleQueue[Fed | None] = queue.SimpleQueue()
        self._done = threading.Event()
        self._done.set()
        self._lock = threading.Lock()  # between its return and ``leave``
        self._leave: tuple[int, ...] = ()  # fds to close when it returns (``leave``)
        self.thread = threading.Thread(target=self._run, name=f"pipe-feed-{name}", daemon=True)
        self.why: str | None = EOF  # not None: the relay thread has the path
        self.errno = 0
        self.recalled = False

    def start(self) -> None:
        """Start the thread if it is not running: ``PipeRelay.start`` does, before the job runs (a
        job that uses up a pids limit later cannot take it away). Raises RuntimeError if the
        kernel refuses a thread; nothing has changed then."""
        if not self.thread.is_alive():
            self.thread.start()

    def give(self, fed: Fed) -> None:
        """The path is the feeder's until it returns (``why`` set again). Raises RuntimeError,
        before anything is handed over, if the thread is not running and cannot be started."""
        assert self.why is not None, "the feeder has a path already"
        self.start()
        self.why = None
        self.recalled = False
        self._done.clear()
        self._inbox.put(fed)

    def recall(self) -> None:
        """Ask it back: it returns from any wait (the caller sends it again after ``REPOKE``)."""
        self.recalled = True
        ident = self.thread.ident
        if self.why is None and ident is not None:
            signal.pthread_kill(ident, self.wake)

    def reclaim(self, timeout: float = RECLAIM_WAIT) -> bool:
        """Recall it and wait until it has returned (stop, failure); False if it did not in time."""
        deadline = time.monotonic() + timeout
        while not self._done.is_set():
            self.recall()
            if self._done.wait(REPOKE) or time.monotonic() > deadline:
                break
        return self._done.is_set()

    def leave(self, fds: tuple[int, ...]) -> bool:
        """After a ``reclaim`` that timed out: the feeder closes ``fds`` itself when its splice
        returns (no fd is closed under a thread that uses it), and does not call ``back``. False
        if it has returned meanwhile: the caller closes them."""
        with self._lock:
            if self._done.is_set():
                return False
            self._leave = fds
            return True

    def cpu(self) -> float:
        """The thread's CPU seconds so far (0 before it started)."""
        ident = self.thread.ident
        if ident is None or not self.thread.is_alive():
            return 0.0
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(ident))
        except OSError:  # it has just ended
            return 0.0

    def close(self, timeout: float = 2.0) -> None:
        """End the thread: at once if it has no path, else when it returns (``leave``)."""
        if self.thread.is_alive():
            self._inbox.put(None)
            if self._done.is_set():
                self.thread.join(timeout)

    def _run(self) -> None:
        libc = splice_call()
        while (fed := self._inbox.get()) is not None:
            why = self._stream(libc, fed)
            with self._lock:
                self.why = why  # before the event: the relay thread reads ``why`` first
                self._done.set()
                leave, self._leave = self._leave, ()
            for fd in leave:
                os.close(fd)
            if not leave:
                self._back()

    def _stream(self, libc: tuple[Splice, Callable[[], int]], fed: Fed) -> str:
        """Blocking splices until EOF, EPIPE, an error or a recall; the count goes to the pump.
        Kept short: the GIL is held from each splice's return to the next call, and a thread
        preempted while holding it stalls every other feeder."""
        splice, get_errno = libc
        upstream, downstream, chunk = fed.upstream, fed.downstream, self.chunk
        moved = fed.moved
        while not self.recalled:
            count = splice(upstream, None, downstream, None, chunk, SPLICE_F_MOVE)
            if count > 0:
                moved += count
                fed.moved = moved
                if fed.first is None:
                    fed.first = time.monotonic()
                continue
            if count == 0:
                return EOF
            code = get_errno()
            if code == errno.EPIPE:
                return CHILD_CLOSED
            if code != errno.EINTR:
                self.errno = code
                return FAILED
        return RECALLED
