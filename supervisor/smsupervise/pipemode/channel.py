"""One Pipe channel's life, epoch after epoch, apart from the splice loop (pump.py): waiting for the
platform's FIFO of each epoch, making and removing ours, the epoch's record (``pipe_epoch_done``),
the live snapshot (``smsupervise-debug status``), and failing alone. Which fd the relay thread
(relay.py) waits on for which channel is ``Poller``'s; moving bytes is the pump's (pump.py).
"""

from __future__ import annotations

import math
import os
import select
import stat
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from smsupervise.linux.pipes import raise_pipe_size
from smsupervise.pipemode.feeder import Feeder
from smsupervise.pipemode.fifos import RelayFifos
from smsupervise.pipemode.meter import (
    FAILED,
    INPUT_STARVED,
    STOPPED,
    TRAINER_BOUND,
    ChannelSnapshot,
    EpochStats,
    RelayEvent,
    RelayFailed,
    first_sample,
)
from smsupervise.pipemode.ring import Ring

APPEAR_POLL = 0.02  # how often to look for the platform's next FIFO
EPOCH_OVER = -1.0  # from Pump.arm: everything has been delivered

Emit = Callable[[RelayEvent], None]  # called on a relay thread


class ChannelSpec(NamedTuple):
    name: str
    upstream_dir: str  # where the platform's <ch>_<N> FIFOs appear
    relay_dir: str  # where ours go
    ring_bytes: int


class Poller:
    """The relay thread's one ``epoll``, edge-triggered: each FIFO is registered once, for the
    epoch's life, so no change of interest can drop an edge; whose each fd is."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.owner: dict[int, ChannelRelay] = {}
        self.interest: dict[int, int] = {}
        self.muted: set[int] = set()

    def add(self, fd: int, events: int, owner: ChannelRelay) -> None:
        """Register ``fd``; if it is ready already, the next wait reports it (the kernel polls it)."""
        self.epoll.register(fd, events | select.EPOLLET)
        self.owner[fd] = owner
        self.interest[fd] = events

    def mute(self, fd: int) -> None:
        """Stop hearing ``fd`` (a feeder has it): out of the epoll set, so the pipe's wake-ups do not
        run epoll's callback (it takes the epoll's lock, shared by every channel's FIFOs)."""
        self.epoll.unregister(fd)
        self.muted.add(fd)

    def unmute(self, fd: int) -> None:
        """Hear ``fd`` again as registered; if it is ready now, the next wait reports it."""
        self.muted.discard(fd)
        self.epoll.register(fd, self.interest[fd] | select.EPOLLET)

    def drop(self, fd: int) -> None:
        if self.owner.pop(fd, None) is not None:
            del self.interest[fd]
            if fd in self.muted:
                self.muted.discard(fd)
            else:
                self.epoll.unregister(fd)


class Pump(Protocol):
    """One epoch of one channel, as the channel sees it (pump.py's ``SplicePump`` moves the bytes)."""

    upstream: int
    downstream: int
    moved: int  # bytes delivered to the child
    first: float | None  # when the first byte was available upstream
    starved: float
    bound: float
    wait_open: float
    ended: str

    def arm(self, now: float) -> float | None: ...

    def on_poll(self, events: list[tuple[int, int]], now: float) -> bool: ...

    def account(self, now: float) -> None: ...

    def waiting_on_child(self) -> bool: ...

    def reclaim(self) -> bool: ...


PumpFactory = Callable[[int, str, Ring, "ChannelRelay", float], Pump]


class ChannelRelay:
    """One channel, epoch after epoch: waits for the platform's FIFO, then pumps it. Driven by the
    relay thread: ``visit`` when one of its fds has an event or at ``due``, the time it asked for.

    If it fails, for any reason, the FIFO it serves the job becomes an immediate EOF (``give_eof``)
    before ``pipe_relay_failed`` is reported: the job never waits on a FIFO nobody will write to.
    """

    def __init__(
        self,
        spec: ChannelSpec,
        emit: Emit,
        ring_bytes: int,
        pipe_size: int,
        poller: Poller,
        *,
        new_pump: PumpFactory,
        back: Callable[[ChannelRelay], None],
        wake: int,
    ) -> None:
        self.spec = spec
        # the direct path's thread (feeder.py); ``back`` wakes the relay thread when it returns
        self.feeder = Feeder(spec.name, pipe_size, lambda: back(self), wake)
        self.new_pump = new_pump  # the splice loop's per-epoch pump (pump.py: the only splice owner)
        self.emit = emit
        self.ring = Ring(ring_bytes, pipe_size)  # this channel's share of the pipe budget
        self.poller = poller
        self.fifos = RelayFifos(spec.relay_dir)
        self.epoch = 0
        self.current: str | None = None  # our FIFO for the epoch being relayed, once made
        self.pump: Pump | None = None
        self.events: list[tuple[int, int]] = []  # this turn's epoll events for this channel's fds
        self.due = 0.0  # when to be visited without an event (monotonic; inf: only for an event)
        self.look_at = 0.0  # when to look for the platform's next FIFO
        self.cpu_start = self.feeder_cpu_start = 0.0
        self.delivered = 0  # bytes delivered in the epochs already over
        self.sample = first_sample(time.monotonic())  # for the snapshot's MB/s
        self.failed = False

    def _path(self, directory: str, epoch: int) -> str:
        return os.path.join(directory, f"{self.spec.name}_{epoch}")

    def prepare(self) -> None:
        """Before the child starts: mirror an epoch 0 that already exists upstream (SageMaker creates
        it before the container starts), so the training code finds ``<ch>_0`` at once."""
        if _is_fifo(self._path(self.spec.upstream_dir, 0)):
            self.fifos.make(self._path(self.spec.relay_dir, 0))
            self.current = self._path(self.spec.relay_dir, 0)

    def visit(self, now: float) -> None:
        """Hand the pump this turn's events (``self.events``, then cleared), then ``arm`` again:
        ``due`` becomes the time it asks to be looked at without an event."""
        pump = self.pump
        try:
            if pump is not None and not pump.on_poll(self.events, now):
                self._end(now)
        finally:
            self.events.clear()
        wait = self.arm(now)
        self.due = math.inf if wait is None else now + wait

    def arm(self, now: float) -> float | None:
        """Seconds until it must be looked at again without an event (None: no limit)."""
        pump = self.pump
        if pump is None:
            if now < self.look_at:
                return self.look_at - now
            if not _is_fifo(self._path(self.spec.upstream_dir, self.epoch)):
                self.look_at = now + APPEAR_POLL
                return APPEAR_POLL
            pump = self._begin(now)
        wait = pump.arm(now)
        if wait == EPOCH_OVER:
            self._end(now)
            return 0.0  # the next epoch's FIFO may be there already
        return wait

    def take_sample(self, now: float) -> None:
        pump = self.pump
        self.sample = self.sample.next(now, self.delivered + (pump.moved if pump is not None else 0))

    def snapshot(self, now: float, running: bool) -> ChannelSnapshot:
        """This channel right now (read from another thread: each field is one attribute read)."""
        pump = self.pump
        moved = pump.moved if pump is not None else 0
        if self.failed:
            state = FAILED
        elif not running:
            state = STOPPED
        elif pump is not None and pump.waiting_on_child():
            state = TRAINER_BOUND
        else:  # the FIFO has room and nothing is held, or the platform's next FIFO is not there yet
            state = INPUT_STARVED
        return ChannelSnapshot(
            channel=self.spec.name,
            epoch=self.epoch,
            epoch_bytes=moved,
            bytes=self.delivered + moved,
            mb_per_s=self.sample.mb_per_s(now),
            state=state,
            ring_held=self.ring.size,
        )

    def stop(self, now: float) -> None:
        if self.pump is not None:
            self.pump.ended = "stopped"
            self._end(now)

    def _begin(self, now: float) -> Pump:
        ours = self._path(self.spec.relay_dir, self.epoch)
        self.fifos.make(ours)  # epoch 0 may have been made by prepare()
        self.current = ours
        upstream = os.open(
            self._path(self.spec.upstream_dir, self.epoch), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        )
        self.pump = self.new_pump(upstream, ours, self.ring, self, now)
        os.set_blocking(upstream, True)  # for the feeder's splice (opened without: no writer yet)
        raise_pipe_size(upstream, self.ring.pipe_size)
        self.cpu_start = time.thread_time()
        self.feeder_cpu_start = self.feeder.cpu()
        self.ring.peak = 0
        return self.pump

    def _release(self) -> Pump | None:
        """Close the epoch's fds: a producer still writing gets EPIPE (on to its next epoch), and the
        child gets EOF."""
        pump, self.pump = self.pump, None
        if pump is not None:
            ours = pump.reclaim()  # False only if the feeder did not return: it closes them
            self.delivered += pump.moved
            if pump.ended in ("child closed", "stopped"):
                self.ring.discard()
            for fd in (pump.upstream, pump.downstream):
                if fd >= 0:
                    self.poller.drop(fd)
                    if ours:
                        os.close(fd)
        return pump

    def _end(self, now: float) -> None:
        pump = self.pump
        assert pump is not None
        pump.account(now)  # before _release: a discarded ring would read as starved
        self._release()
        if self.current is not None:
            self.fifos.remove(self.current)  # done: the next epoch's FIFO is the one to open
        self.current = None
        seconds = now - pump.first if pump.first is not None else 0.0
        stats = EpochStats(
            self.spec.name,
            self.epoch,
            pump.moved,
            round(seconds, 6),
            round(pump.starved, 6),
            round(pump.bound, 6),
            round(pump.wait_open, 6),
            pump.ended,
            self.ring.allocated,
            self.ring.peak,
            round(time.thread_time() - self.cpu_start, 6),
            round(self.feeder.cpu() - self.feeder_cpu_start, 6),
        )
        self.emit(stats)
        self.epoch += 1
        self.look_at = 0.0

    def fail(self, error: Exception) -> None:
        """The channel is over: EOF for the job's FIFO first, then the facts in the event."""
        self.failed = True
        filename = getattr(error, "filename", None)
        failed = RelayFailed(
            self.spec.name,
            self.epoch,
            f"{type(error).__name__}: {error}",
            None if filename is None else str(filename),
            self.current,
        )
        try:
            self._release()
            if self.current is not None:
                self.fifos.give_eof(self.current)
        except OSError as eof_error:
            failed = failed._replace(eof_error=f"{type(eof_error).__name__}: {eof_error}")
        self.emit(failed)


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
