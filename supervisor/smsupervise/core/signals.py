"""The only module that sets signal dispositions. Handlers record the signal and wake the loop; the
loop decides what to do.

Why ``signal.signal`` and not ``loop.add_signal_handler``: handlers must exist from the first moment
(as PID 1 the kernel drops a signal that has no handler, pid_namespaces(7)), long before a loop
exists; uvloop refuses SIGCHLD (uvloop loop.pyx ``add_signal_handler``) and only listens while
``run()`` is active. A Python-level handler runs on the main thread between bytecodes in every case;
uvloop and asyncio both run it promptly because the C-level handler writes to the wake-up fd.
Python coalesces repeats of one signal that arrive before its handler runs (real-time signals too).
"""

from __future__ import annotations

import asyncio
import signal
from collections import deque
from collections.abc import Callable
from types import FrameType

# Synchronous faults are about this process itself; catching them would hide our own crash.
# SIGKILL and SIGSTOP cannot be caught.
NOT_HANDLED = frozenset(
    {
        signal.SIGKILL,
        signal.SIGSTOP,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGTRAP,
        signal.SIGSYS,
        signal.SIGABRT,
    }
)
# Job-control tty signals are ignored by smsupervise itself (so it can never be stopped by a
# background read/write on a terminal, as tini does) and not forwarded: the kernel sends them to
# the process group that touched the terminal, which is where they belong. SIGPIPE is about our own
# writes (whoever read our stdout went away): ignored, never forwarded, so the job runs on; the
# write fails with EPIPE and what it held is dropped and counted (streams/writer.py). With the Pipe
# relay, SIGPIPE gets a handler that does nothing instead (``thread_wake``): the same for our writes.
IGNORED = frozenset({signal.SIGTTIN, signal.SIGTTOU, signal.SIGPIPE})
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def catchable() -> list[int]:
    """Every signal this platform lets a handler catch, real-time ones included, minus the faults."""
    return sorted(int(s) for s in signal.valid_signals() if s not in NOT_HANDLED)


def default_dispositions() -> tuple[int, ...]:
    """What a spawned child resets to SIG_DFL: everything, so it never inherits an ignore
    (Python ignores SIGPIPE and SIGXFSZ; a parent may have ignored SIGINT or SIGHUP)."""
    return tuple(sorted(int(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)))


class SignalInbox:
    """Signals received and not yet handled, in arrival order; SIGCHLD is kept apart as a flag."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._wake: Callable[[], None] | None = None
        self.child_event = False

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        # Hand off and return: no logging, no I/O, no decisions (architecture.md habit 4).
        if signum == signal.SIGCHLD:
            self.child_event = True
        else:
            self._pending.append(signum)
        wake = self._wake
        if wake is not None:
            wake()

    def attach(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (thread- and signal-safe, e.g. a ``call_soon_threadsafe`` partial) on each signal.

        If signals arrived before this call, ``wake`` is called at once.
        """
        self._wake = wake
        if self._pending or self.child_event:
            wake()

    def detach(self) -> None:
        self._wake = None

    def drain(self) -> list[int]:
        """Take the pending signals (not SIGCHLD), oldest first."""
        taken = list(self._pending)
        self._pending.clear()
        return taken

    def stop_pending(self) -> bool:
        """Whether a SIGTERM or SIGINT is waiting (outside the loop: the final flush gives way)."""
        return any(signum in STOP_SIGNALS for signum in self._pending)

    def take_child_event(self) -> bool:
        """True once per burst of SIGCHLD."""
        event, self.child_event = self.child_event, False
        return event


def _nothing(_signum: int, _frame: FrameType | None) -> None:
    """A handler only so that the signal interrupts a blocking system call (EINTR)."""


def thread_wake() -> int:
    """The signal that wakes a thread of ours blocked in a system call (``signal.pthread_kill``):
    SIGPIPE, given a handler that does nothing. A signal that is ignored interrupts nothing, and
    every other one is the job's to receive (each is forwarded); SIGPIPE is never forwarded and a
    handler that does nothing leaves our own writes as they were (EPIPE). For the Pipe relay's
    feeders (pipemode/feeder.py). On the main thread (``signal.signal``); again is harmless."""
    if signal.getsignal(signal.SIGPIPE) is not _nothing:
        signal.signal(signal.SIGPIPE, _nothing)
    return int(signal.SIGPIPE)


def install() -> SignalInbox:
    """Install a handler for every catchable signal, and unblock every signal (a parent may have
    blocked SIGTERM with ``pthread_sigmask``, which would silently disable the stop); returns the
    inbox they feed."""
    inbox = SignalInbox()
    for signum in catchable():
        try:
            if signum in IGNORED:
                signal.signal(signum, signal.SIG_IGN)
            else:
                signal.signal(signum, inbox._handler)
        except (OSError, ValueError):  # glibc-reserved real-time signals (32, 33) are refused
            continue
    signal.pthread_sigmask(signal.SIG_SETMASK, ())  # after the handlers: pending ones arrive now
    return inbox


def wake_for(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> Callable[[], None]:
    """How a signal handler schedules ``callback`` on ``loop``.

    Python runs signal handlers on the main thread, between bytecodes. Under uvloop that is always
    inside a loop iteration (uvloop reads its wake-up fd, then runs pending handlers), so a plain
    ``call_soon`` is safe and saves a second eventfd round trip (TERM latency, benchmarks/pid1.py).
    The stdlib loop may be inside ``epoll_wait``, which PEP 475 retries after the handler, so it
    needs ``call_soon_threadsafe`` to write its self-pipe and wake up.
    """
    if type(loop).__module__.startswith("uvloop"):

        def wake() -> None:
            loop.call_soon(callback)

    else:

        def wake() -> None:
            loop.call_soon_threadsafe(callback)

    return wake
