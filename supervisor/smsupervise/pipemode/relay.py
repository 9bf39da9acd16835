"""The Pipe-mode relay: the only module that calls ``os.splice``.

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

**One thread** serves every channel: one ``poll`` over all their FIFOs, then one splice per ready
FIFO, so N channels cost no more wake-ups than N C loops and share fairly (each ready channel moves
at most one pipe's worth per turn). One thread rather than one per channel: threads would hand the
GIL to each other after every ``poll`` and splice (a futex wake-up each, two per splice measured
with four channels). The event loop never waits on a channel; events go back to it with
``call_soon_threadsafe``. FIFOs are opened non-blocking; a 0-byte splice counts as EOF only after
``poll`` said the FIFO was ready (before a writer ever attached, a non-blocking read also says 0).

Here: the relay thread and the splice loop (``_Pump``). A channel's life across epochs, its
records and its live snapshot are channel.py's and meter.py's.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import threading
import time

from smsupervise.errors import UsageError
from smsupervise.linux.pipes import PipeLimits, raise_pipe_size, read_limits
from smsupervise.pipemode.budget import plan_rings
from smsupervise.pipemode.channel import EPOCH_OVER, ChannelRelay, ChannelSpec, Emit, Poller
from smsupervise.pipemode.fifos import check_relay_dir
from smsupervise.pipemode.meter import SAMPLE_EVERY, ChannelSnapshot
from smsupervise.pipemode.ring import Ring

SPLICE_F_MOVE = 1
SPLICE_F_NONBLOCK = 2
SPLICE_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK
OPEN_RETRY = 0.005  # how often to retry opening the child's FIFO for writing (ENXIO: no reader yet)
READ_AHEAD_AFTER = 0.010  # the child's FIFO full this long: it is computing (not descheduled): read ahead


class _Pump:
    """One epoch of one channel: move bytes until EOF is delivered, the child closes, or a stop.

    Shaped like the C loop in the common case (the child keeps up, the ring is empty): one ``poll``
    on upstream, one splice straight into the child's FIFO; the poll's interest is changed only when
    it changes. A splice that fills the child's FIFO is followed by a wait for room only when it
    moved a whole pipe's worth (upstream was full: the producer is ahead and will refill it).
    When upstream has data and the child's FIFO is full, the pump waits for room, as a blocking
    splice would, and leaves the data in the platform's FIFO; only when the child has not read for
    ``READ_AHEAD_AFTER`` (it is computing) does it read ahead into the ring.
    While the ring holds data and the child reads, the ring drains first, so it empties again and
    each byte moves once: a ring left standing would make every byte take two hops, and the
    child's reads come from pages written ``ring`` bytes ago, out of the cache.

    No clock is read here: ``now`` is the relay thread's one reading per poll.
    """

    def __init__(
        self, upstream: int, downstream_path: str, ring: Ring, owner: ChannelRelay, now: float
    ) -> None:
        self.upstream = upstream
        self.downstream_path = downstream_path
        self.downstream = -1
        self.open_at = 0.0  # when to try opening the child's FIFO next (ENXIO: no reader yet)
        self.down_size = 0  # the child's FIFO's capacity
        self.ring = ring
        self.owner = owner
        self.now = now  # the poll's return time, for the timestamps taken while acting on it
        self.up_want = self.down_want = 0  # what each fd is registered for now
        self.upstream_open = True
        self.ended = "eof"
        self.moved = 0
        self.first: float | None = None
        self.starved = self.bound = self.wait_open = 0.0
        self.full_since: float | None = None  # the child's FIFO is full (or the ring holds data)
        self.ahead = False  # the child has not read for READ_AHEAD_AFTER: read ahead into the ring
        self.up_seen = False  # poll has said upstream is ready (before that, 0 bytes is not EOF)

    def arm(self, now: float) -> float | None:
        """Before the poll: seconds until it must be looked at again (None: no limit), or
        ``EPOCH_OVER`` when everything has been delivered."""
        if self.downstream < 0 and now >= self.open_at:
            self.open_at = now + OPEN_RETRY  # at most every OPEN_RETRY: other channels may be busy
            self._open_downstream()
        if not self.upstream_open and not self.ring.size and self.downstream >= 0:
            return EPOCH_OVER  # all out, and the child's FIFO is open: closing it is the child's EOF
        return self._register(now)

    def on_poll(self, events: list[tuple[int, int]], waited: float, now: float) -> bool:
        """After the poll (``events`` are this pump's); False once the epoch is over."""
        self.now = now
        if self.first is not None:
            self._account(waited)
        return self._handle(events) if events else True

    def waiting_on_child(self) -> bool:
        """Whether data is held back by the child right now (not opened, FIFO full, ring holding)."""
        return self.downstream < 0 or self.full_since is not None or self.ring.size > 0

    def _register(self, now: float) -> float | None:
        """Say what to wait for; returns how long it may wait, in seconds (None: no limit)."""
        ring = self.ring
        if self.downstream < 0:  # the child has not opened its FIFO yet: read ahead
            self._want(select.POLLIN if self.upstream_open and ring.has_room() else 0, self.down_want)
            return self.open_at - now
        if self.full_since is None and ring.size:
            self.full_since = now  # the ring holds data: wait for room in the child's FIFO first
        if self.full_since is None:  # the common case: upstream straight to the child
            # POLLERR is always reported: with no data to write, it still says the child closed.
            self._want(select.POLLIN if self.upstream_open else 0, select.POLLERR)
            return None
        if not self.ahead and now - self.full_since >= READ_AHEAD_AFTER:
            self.ahead = True  # the child has not read for a while: it is computing, read ahead
        can_pull = self.ahead and self.upstream_open and ring.has_room()
        self._want(select.POLLIN if can_pull else 0, select.POLLOUT)
        if self.ahead or not self.upstream_open:
            return None
        return self.full_since + READ_AHEAD_AFTER - now

    def _want(self, up: int, down: int) -> None:
        """Change the poll's interest only where it changes (a change rebuilds poll's fd array)."""
        if up != self.up_want:
            self.up_want = up
            self.owner.poller.want(self.upstream, up, self.owner)
        if down != self.down_want and self.downstream >= 0:
            self.down_want = down
            self.owner.poller.want(self.downstream, down, self.owner)

    def _handle(self, events: list[tuple[int, int]]) -> bool:
        """Act on what ``poll`` said; False once the epoch is over."""
        up_ready = down_ready = False
        for fd, revents in events:
            if fd == self.upstream:
                up_ready = self.up_seen = True  # a writer is or was there: a 0-byte splice is EOF
            elif revents & select.POLLERR and not self.ring.size:
                self.ended = "child closed"  # nothing was in flight: nothing else to tell
                return False
            else:
                down_ready = True
        if down_ready:
            return self._room()
        if up_ready:
            return self._pull()
        return True

    def _room(self) -> bool:
        """The child's FIFO has room: drain the ring into it, then take the direct path again."""
        self.ahead = False  # the child reads again: drain the ring before reading ahead
        if not self._drain_ring():
            return False
        if self.ring.size:  # still held: the child's FIFO is full again as of now
            self.full_since = self.now
            return True
        self.full_since = None  # room, nothing held: the direct path, at once if data waits
        return not (self.upstream_open and self.up_seen) or self._direct(room=True)

    def _account(self, waited: float) -> None:
        if self.downstream < 0:
            self.wait_open += waited
            self.bound += waited
        elif self.ring.size == 0 and self.full_since is None:
            self.starved += waited
        else:
            self.bound += waited

    def _open_downstream(self) -> None:
        try:
            self.downstream = os.open(self.downstream_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: the child has not opened its FIFO yet
                raise
            return
        self.down_size = raise_pipe_size(self.downstream, self.ring.pipe_size)

    def _pull(self) -> bool:
        """Upstream is ready: straight to the child when nothing is held, else into the ring (the
        child has not read for a while). False once the child has closed its end."""
        ring = self.ring
        if ring.size == 0 and self.downstream >= 0 and self.full_since is None:
            return self._direct(room=False)
        tail = ring.tail_room()
        if tail is not None:
            count = _splice(self.upstream, tail.write_fd, tail.space())
            if count is None:
                ring.full(tail)
            else:
                self._moved_upstream(count)
                ring.added(tail, count)
        return True

    def _direct(self, room: bool) -> bool:
        """Upstream straight into the child's FIFO, as the C loop does. ``room``: poll said the FIFO
        has room, so a splice that would block means upstream is empty (else that the FIFO is full).
        A whole FIFO's worth moved means it is full now, and that upstream was full too (both pipes
        have the same size): the producer is ahead, so wait for room without a call to hear EAGAIN.
        False once the child has closed its end."""
        count = _splice(self.upstream, self.downstream, self.ring.pipe_size)
        if count is None:
            if not room:
                self.full_since = self.now  # the child's FIFO is full: wait for room
            return True
        if count < 0:
            self.ended = "child closed"
            return False
        self._moved_upstream(count)
        self.moved += count
        if count >= self.down_size:  # upstream was full too (same size): the producer is ahead
            self.full_since = self.now
        return True

    def _moved_upstream(self, count: int) -> None:
        if count == 0:
            self.upstream_open = False  # a 0-byte splice after readiness: real EOF
        elif self.first is None:
            self.first = self.now

    def _drain_ring(self) -> bool:
        """Ring -> child, oldest first, until the child's FIFO is full; False if the child has closed.
        Moving less than asked, or a whole FIFO's worth, means it is full: no call just to hear EAGAIN."""
        head = self.ring.head()
        budget = self.down_size
        while head is not None and budget > 0:
            count = _splice(head.read_fd, self.downstream, head.held)
            if count is None:
                return True
            if count < 0:
                self.ended = "child closed"
                return False
            asked = head.held
            self.ring.consumed(head, count)
            self.moved += count
            if count < asked:
                return True
            budget -= count
            head = self.ring.head()
        return True


def _splice(src: int, dst: int, count: int) -> int | None:
    """Bytes moved; 0 at EOF of ``src``; None when it would block; -1 when ``dst`` has no reader."""
    try:
        return os.splice(src, dst, count, flags=SPLICE_FLAGS)
    except BlockingIOError:
        return None
    except BrokenPipeError:
        return -1


class PipeRelay:
    """All channels' relays: ``start()`` before the child runs, ``stop()`` after it has exited.

    The rings share one pipe budget (``budget.plan_rings``): ``limits`` are the kernel's, read from
    /proc unless given.
    """

    def __init__(
        self, channels: tuple[ChannelSpec, ...], emit: Emit, limits: PipeLimits | None = None
    ) -> None:
        self.channels = channels
        self.plan = plan_rings(tuple(spec.ring_bytes for spec in channels), limits or read_limits())
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._made_dirs: list[str] = []
        self.poller = Poller()
        self.relays = [
            ChannelRelay(spec, emit, ring, self.plan.pipe_size, self.poller, new_pump=_Pump)
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
        self.thread.start()

    def _run(self) -> None:
        """The relay thread: arm every channel, one poll, hand each channel its events. One clock
        reading per turn, nothing allocated per turn but what ``poll`` returns; a channel that
        fails is reported and dropped (its FIFO gives EOF), the others go on."""
        poll = self.poller.poll
        poll.register(self._stop_r, select.POLLIN)
        active = list(self.relays)
        dead: list[tuple[ChannelRelay, Exception]] = []
        now = time.monotonic()
        next_sample = now
        try:
            while active:
                if now >= next_sample:
                    for relay in active:
                        relay.take_sample(now)
                    next_sample = now + SAMPLE_EVERY
                # wake at least once a sample, for the snapshot's MB/s
                soonest = self._arm_all(active, dead, now, next_sample - now)
                events = poll.poll(math.ceil(soonest * 1000) if soonest > 0 else 0)
                then = time.monotonic()
                waited, now = then - now, then  # the whole turn, charged to the state before the poll
                if not self._dispatch(events, active, dead, waited, now):
                    return
                if dead:
                    self._bury(active, dead)
        finally:
            for relay in self.relays:
                relay.ring.close()

    @staticmethod
    def _arm_all(
        active: list[ChannelRelay], dead: list[tuple[ChannelRelay, Exception]], now: float, soonest: float
    ) -> float:
        """Arm every channel; the poll's timeout: the soonest any of them must be looked at."""
        for relay in active:
            try:
                wait = relay.arm(now)
            except Exception as error:  # reported as an event; the job and the others go on
                dead.append((relay, error))
                continue
            if wait is not None and wait < soonest:
                soonest = wait
        return soonest

    def _dispatch(
        self,
        events: list[tuple[int, int]],
        active: list[ChannelRelay],
        dead: list[tuple[ChannelRelay, Exception]],
        waited: float,
        now: float,
    ) -> bool:
        """Hand each channel its events (every channel is called: it accounts the wait); False on stop."""
        owner = self.poller.owner
        for event in events:
            if event[0] == self._stop_r:
                self._stop_all(active, now)
                return False
            relay_of = owner.get(event[0])
            if relay_of is not None:
                relay_of.events.append(event)  # poll's own (fd, revents) tuple
        for relay in active:
            try:
                relay.on_poll(waited, now)
            except Exception as error:  # as in _arm_all
                relay.events.clear()
                dead.append((relay, error))
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
        for relay in self.relays:
            relay.fifos.remove_all()
        for relay_dir in self._made_dirs:
            with contextlib.suppress(OSError):  # not empty: something that is not ours is in it
                os.rmdir(relay_dir)
        os.close(self._stop_r)
        os.close(self._stop_w)
