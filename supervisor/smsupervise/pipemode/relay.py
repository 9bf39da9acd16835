"""The Pipe-mode relay: one thread for every channel, and a feeder thread per channel for the
direct path (the splice loop itself: pump.py and feeder.py).

For each Pipe channel SageMaker creates FIFOs ``<data dir>/<ch>_<N>`` (epoch N = 0, 1, ...). The relay
opens each as it appears and serves its bytes to the training code through FIFOs of its own,
``<relay dir>/<ch>_<N>``, with ``SM_CHANNEL_<CH>`` pointing at ``<relay dir>/<ch>``.

**Data path.** Bytes move only with ``splice`` (page references, no copy through user space):

    platform FIFO --splice--> ring --splice--> child FIFO          (the trainer is slower)
    platform FIFO --splice------------------> child FIFO          (the ring is empty: one move)

**The ring** is a queue of pipes, each raised to 1 MiB (``pipe-max-size``; bigger needs
CAP_SYS_RESOURCE): data goes in at the tail pipe and comes out of the head pipe, so it is read ahead
while the trainer computes, up to ``--pipe-buffer`` bytes. Pipes, not a memfd: splicing into a
memfd copies, and pages spliced out of it stay referenced by the downstream pipe, so reusing ring
offsets would need to know when the reader has consumed them; a pipe's pages belong to the pipe, and
moving them on is the kernel's bookkeeping. When the trainer keeps up the ring stays empty and
each byte moves once, upstream straight to the child's FIFO.

**Threads.** One relay thread serves every channel: one edge-triggered ``epoll`` over all their
FIFOs, then each channel with something to do moves until it cannot (at most ``TURN_BYTES`` a turn,
so channels share fairly). It opens each epoch, fills and drains the rings, keeps the records, and
decides. The direct path (the child keeps up, the ring is empty: the common case) is handed to the
channel's feeder thread (feeder.py), which sleeps in a blocking ``splice`` as the C relay does and
is recalled when the child stalls, closes, or the relay stops. Measured (README): one thread woken
for every channel's every MiB lost 10-20 % to N blocking C relays, and so did a C program of that
shape; with the feeders 1 and 4 channels reach the C relays. Edge-triggered because a level-
triggered ``poll`` says a FIFO is readable as soon as the producer's first page is in, while the
producer still holds the pipe's lock copying the rest of its write: the splice that follows spins on
that lock (62 % of the relay thread's samples at 4 channels); an edge comes when the write is over.
How the pump keeps readiness so that no wake-up is lost: ``pump.SplicePump``. The event loop never
waits on a channel; events go back to it with ``call_soon_threadsafe``. FIFOs are opened non-
blocking (an open would wait for the other end), then made blocking for the feeder; the pump's
splices ask for SPLICE_F_NONBLOCK. A 0-byte splice counts as EOF only after an event said a writer
was there (before a writer ever attached, a read also says 0).

Here: the relay thread; the splice loop is pump.py's (``SplicePump``), the direct path feeder.py's.
A channel's life across epochs, its records and its live snapshot are channel.py's and meter.py's.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import threading
import time
from collections import deque

from smsupervise.errors import UsageError
from smsupervise.linux.pipes import PipeLimits, read_limits
from smsupervise.pipemode.budget import plan_rings
from smsupervise.pipemode.channel import ChannelRelay, ChannelSpec, Emit, Poller
from smsupervise.pipemode.fifos import check_relay_dir
from smsupervise.pipemode.meter import SAMPLE_EVERY, ChannelSnapshot
from smsupervise.pipemode.pump import SplicePump


class PipeRelay:
    """All channels' relays: ``start()`` before the child runs, ``stop()`` after it has exited.

    The rings share one pipe budget (``budget.plan_rings``): ``limits`` are the kernel's, read from
    /proc unless given.
    """

    def __init__(
        self,
        channels: tuple[ChannelSpec, ...],
        emit: Emit,
        limits: PipeLimits | None = None,
        *,
        wake: int,
    ) -> None:
        self.channels = channels
        self.plan = plan_rings(tuple(spec.ring_bytes for spec in channels), limits or read_limits())
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._back = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)  # a feeder has returned
        self._returned: deque[ChannelRelay] = deque()
        self._made_dirs: list[str] = []
        self.poller = Poller()
        self.relays = [
            ChannelRelay(
                spec,
                emit,
                ring,
                self.plan.pipe_size,
                self.poller,
                new_pump=SplicePump,
                back=self._feeder_back,
                wake=wake,
            )
            for spec, ring in zip(channels, self.plan.rings, strict=True)
        ]
        self.thread = threading.Thread(target=self._run, name="pipe-relay", daemon=True)

    def describe(self) -> dict[str, object]:
        """Fields for ``pipe_relay_started``: what each ring may hold, and the budget behind it."""
        return {
            "ring_bytes": self.channels[0].ring_bytes if self.channels else 0,
            "rings": {spec.name: ring for spec, ring in zip(self.channels, self.plan.rings, strict=True)},
            "pipe_budget": self.plan.describe(),
        }

    def snapshot(self) -> tuple[ChannelSnapshot, ...]:
        """Every channel right now; safe to call from any thread (the relay thread is not paused)."""
        now = time.monotonic()
        running = self.thread.is_alive()
        return tuple(relay.snapshot(now, running) for relay in self.relays)

    def _feeder_back(self, relay: ChannelRelay) -> None:
        """On a feeder's thread: it has returned; the relay thread visits its channel next turn."""
        self._returned.append(relay)
        os.eventfd_write(self._back, 1)

    def start(self) -> None:
        """Check and make the relay dirs, mirror epoch 0, start the relay thread. A dir that cannot
        be used raises ``UsageError`` before anything is started."""
        for relay_dir in sorted({spec.relay_dir for spec in self.channels}):
            names = tuple(spec.name for spec in self.channels if spec.relay_dir == relay_dir)
            upstream = next(spec.upstream_dir for spec in self.channels if spec.relay_dir == relay_dir)
            check_relay_dir(relay_dir, upstream, names)
            if not os.path.isdir(relay_dir):
                self._made_dirs.append(relay_dir)
            try:
                os.makedirs(relay_dir, mode=0o755, exist_ok=True)
            except OSError as error:
                raise UsageError(
                    f"--pipe-relay-dir {relay_dir}: cannot create it: {error.strerror}"
                ) from None
        for relay in self.relays:
            try:
                relay.prepare()
            except OSError as error:
                raise UsageError(
                    f"--pipe-relay-dir {relay.spec.relay_dir}: cannot create the FIFO {error.filename}: "
                    f"{error.strerror}"
                ) from None
        for relay in self.relays:  # before the job runs: its threads cannot use up a pids limit first
            with contextlib.suppress(RuntimeError):  # else tried again at the channel's first hand-over
                relay.feeder.start()
        self.thread.start()

    def _run(self) -> None:
        """The relay thread: one wait, then a look at each channel that has events or whose time
        has come, and only those (a channel that is waiting costs nothing per turn). One clock
        reading per turn, nothing allocated per turn but what ``epoll`` returns; a channel that
        fails is reported and dropped (its FIFO gives EOF), the others go on."""
        epoll = self.poller.epoll
        epoll.register(self._stop_r, select.EPOLLIN)  # level-triggered: it stays readable
        epoll.register(self._back, select.EPOLLIN)
        active = list(self.relays)
        most = 2 * len(active) + 2  # each channel's two FIFOs, the stop pipe, the feeders' eventfd
        dead: list[tuple[ChannelRelay, Exception]] = []
        now = time.monotonic()
        next_sample = soonest = now
        for relay in active:
            relay.due = now
        try:
            while active:
                if now >= next_sample:
                    for relay in active:
                        relay.take_sample(now)
                    next_sample = now + SAMPLE_EVERY
                # wake at least once a sample, for the snapshot's MB/s
                soonest = min(soonest, next_sample)
                events = epoll.poll(soonest - now if soonest > now else 0, most)
                now = time.monotonic()
                if not self._hand_out(events, active, now):
                    return
                soonest = math.inf
                for relay in active:
                    if relay.events or relay.due <= now:
                        try:
                            relay.visit(now)
                        except Exception as error:  # reported as an event; the job and the others go on
                            dead.append((relay, error))
                    soonest = min(soonest, relay.due)
                if dead:
                    self._bury(active, dead)
        finally:
            for relay in self.relays:
                relay.ring.close()
            epoll.close()

    def _hand_out(self, events: list[tuple[int, int]], active: list[ChannelRelay], now: float) -> bool:
        """Give each channel its events; False on the stop (every channel stopped)."""
        owner = self.poller.owner
        for event in events:
            relay_of = owner.get(event[0])
            if relay_of is not None:
                relay_of.events.append(event)  # epoll's own (fd, events) tuple
            elif event[0] == self._back:
                os.eventfd_read(self._back)
                while self._returned:
                    self._returned.popleft().due = now
            elif event[0] == self._stop_r:
                self._stop_all(active, now)
                return False
        return True

    @staticmethod
    def _bury(active: list[ChannelRelay], dead: list[tuple[ChannelRelay, Exception]]) -> None:
        """End the failed channels only (reported, their FIFOs give EOF)."""
        for relay, error in dead:
            if relay in active:
                active.remove(relay)
                relay.fail(error)
        dead.clear()

    def _stop_all(self, active: list[ChannelRelay], now: float) -> None:
        dead: list[tuple[ChannelRelay, Exception]] = []
        for relay in active:
            try:
                relay.stop(now)
            except Exception as error:  # as in _run
                dead.append((relay, error))
        self._bury(active, dead)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the relay thread, then remove what it created (FIFOs, EOF files, dirs), nothing else."""
        os.write(self._stop_w, b"x")
        if self.thread.ident is not None:
            self.thread.join(timeout)
        if not self.thread.is_alive():
            self.poller.epoll.close()  # the thread closes it too when it ends; never started: here
        for relay in self.relays:
            relay.feeder.close()
            relay.fifos.remove_all()
        for relay_dir in self._made_dirs:
            with contextlib.suppress(OSError):  # not empty: something that is not ours is in it
                os.rmdir(relay_dir)
        os.close(self._stop_r)
        os.close(self._stop_w)
        os.close(self._back)
