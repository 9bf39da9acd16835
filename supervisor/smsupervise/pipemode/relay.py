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

**Threads.** One thread per channel runs ``poll`` and non-blocking splices (the GIL is released in
both), so the event loop never waits on a channel; events go back to it with
``call_soon_threadsafe``. FIFOs are opened non-blocking; a 0-byte splice counts as EOF only after
``poll`` said the FIFO was ready (before a writer ever attached, a non-blocking read also says 0).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from smsupervise.errors import UsageError
from smsupervise.linux.pipes import PipeLimits, raise_pipe_size, read_limits
from smsupervise.pipemode.budget import plan_rings
from smsupervise.pipemode.fifos import RelayFifos, check_relay_dir
from smsupervise.pipemode.ring import Ring

SPLICE_F_MOVE = 1
SPLICE_F_NONBLOCK = 2
SPLICE_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK
OPEN_RETRY = 0.005  # how often to retry opening the child's FIFO for writing (ENXIO: no reader yet)
APPEAR_POLL = 0.02  # how often to look for the platform's next FIFO
READ_AHEAD_AFTER = 0.002  # the child's FIFO full this long: it is computing, so read ahead

Emit = Callable[[str, dict[str, object]], None]


class ChannelSpec(NamedTuple):
    name: str
    upstream_dir: str  # where the platform's <ch>_<N> FIFOs appear
    relay_dir: str  # where ours go
    ring_bytes: int


class EpochStats(NamedTuple):
    """Per channel and epoch: what moved and where the time went."""

    channel: str
    epoch: int
    bytes: int
    seconds: float  # from the first byte available upstream to EOF delivered
    input_starved_s: float  # the child's FIFO had room and the ring was empty: waiting on upstream
    trainer_bound_s: float  # data was waiting and the child's FIFO was full (or not yet opened)
    wait_open_s: float  # of which: before the child opened the epoch's FIFO
    ended: str  # "eof", "child closed", "stopped"
    ring_bytes: int  # the ring's capacity
    ring_peak: int  # the most it held
    cpu_s: float  # this relay thread's CPU time for the epoch


class ChannelRelay(threading.Thread):
    """Relays one channel, epoch after epoch, until stopped.

    If it fails, for any reason, the FIFO it serves the job becomes an immediate EOF (``give_eof``)
    before ``pipe_relay_failed`` is reported: the job never waits on a FIFO nobody will write to.
    """

    def __init__(self, spec: ChannelSpec, emit: Emit, stop_fd: int, ring_bytes: int, pipe_size: int) -> None:
        super().__init__(name=f"pipe-relay-{spec.name}", daemon=True)
        self.spec = spec
        self.emit = emit
        self.stop_fd = stop_fd  # readable once the relay must stop
        self.ring_bytes = ring_bytes  # this channel's share of the pipe budget
        self.pipe_size = pipe_size
        self.fifos = RelayFifos(spec.relay_dir)
        self.epoch = 0
        self.current: str | None = None  # our FIFO for the epoch being relayed, once made

    def _ours(self, epoch: int) -> str:
        return os.path.join(self.spec.relay_dir, f"{self.spec.name}_{epoch}")

    def prepare(self) -> None:
        """Before the child starts: mirror an epoch 0 that already exists upstream (SageMaker creates
        it before the container starts), so the training code finds ``<ch>_0`` at once."""
        if _is_fifo(os.path.join(self.spec.upstream_dir, f"{self.spec.name}_0")):
            self.fifos.make(self._ours(0))
            self.current = self._ours(0)

    def _stopping(self) -> bool:
        readable, _, _ = select.select([self.stop_fd], [], [], 0)
        return bool(readable)

    def run(self) -> None:
        ring = Ring(self.ring_bytes, self.pipe_size)
        try:
            while not self._stopping():
                upstream_path = os.path.join(self.spec.upstream_dir, f"{self.spec.name}_{self.epoch}")
                if not self._wait_for(upstream_path):
                    return
                stats = self._epoch(self.epoch, upstream_path, ring)
                self.emit("pipe_epoch_done", stats._asdict())
                if stats.ended == "stopped":
                    return
                self.epoch += 1
        except Exception as error:  # reported as an event; the job goes on, its FIFO gives EOF
            self._failed(error)
        finally:
            ring.close()

    def _failed(self, error: Exception) -> None:
        """The channel is over: EOF for the job's FIFO first, then the facts in the event."""
        fields: dict[str, object] = {
            "channel": self.spec.name,
            "epoch": self.epoch,
            "error": f"{type(error).__name__}: {error}",
            "path": getattr(error, "filename", None),
            "fifo": self.current,
        }
        if self.current is not None:
            try:
                self.fifos.give_eof(self.current)
            except OSError as eof_error:
                fields["eof_error"] = f"{type(eof_error).__name__}: {eof_error}"
        self.emit("pipe_relay_failed", fields)

    def _wait_for(self, path: str) -> bool:
        """Until the platform's FIFO for the epoch exists; False if we were stopped first."""
        while True:
            if _is_fifo(path):
                return True
            readable, _, _ = select.select([self.stop_fd], [], [], APPEAR_POLL)
            if readable:
                return False

    def _epoch(self, epoch: int, upstream_path: str, ring: Ring) -> EpochStats:
        ours = self._ours(epoch)
        self.fifos.make(ours)  # epoch 0 may have been made by prepare()
        self.current = ours
        upstream = os.open(upstream_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        pump = _Pump(upstream, ours, ring, self.stop_fd)
        cpu_start = time.thread_time()
        ring.peak = 0
        try:
            raise_pipe_size(upstream, self.pipe_size)
            pump.run()
        finally:
            if pump.ended in ("child closed", "stopped"):
                ring.discard()
            os.close(upstream)  # a producer still writing gets EPIPE: on to its next epoch
            if pump.downstream >= 0:
                os.close(pump.downstream)  # EOF for the child
        self.fifos.remove(ours)  # done: the next epoch's FIFO is the one to open
        self.current = None
        seconds = time.monotonic() - pump.first if pump.first is not None else 0.0
        return EpochStats(
            self.spec.name,
            epoch,
            pump.moved,
            round(seconds, 6),
            round(pump.starved, 6),
            round(pump.bound, 6),
            round(pump.wait_open, 6),
            pump.ended,
            ring.allocated,
            ring.peak,
            round(time.thread_time() - cpu_start, 6),
        )


class _Pump:
    """One epoch of one channel: move bytes until EOF is delivered, the child closes, or a stop.

    Shaped like the C loop in the common case (the child keeps up, the ring is empty): one ``poll``
    on upstream, one splice straight into the child's FIFO. When that FIFO is full the pump waits
    for room, as a blocking splice would, and leaves the data in the platform's FIFO; only when the
    child has not read for ``READ_AHEAD_AFTER`` (it is computing) does it read ahead into the ring.
    While the ring holds data and the child reads, the ring drains first, so it empties again and
    each byte moves once: a ring left standing would make every byte take two hops, and the
    child's reads come from pages written ``ring`` bytes ago, out of the cache.
    """

    def __init__(self, upstream: int, downstream_path: str, ring: Ring, stop_fd: int) -> None:
        self.upstream = upstream
        self.downstream_path = downstream_path
        self.downstream = -1
        self.down_size = 0  # the child's FIFO's capacity
        self.ring = ring
        self.stop_fd = stop_fd
        self.upstream_open = True
        self.ended = "eof"
        self.moved = 0
        self.first: float | None = None
        self.starved = self.bound = self.wait_open = 0.0
        self.full_since: float | None = None  # the child's FIFO is full (or the ring holds data)
        self.ahead = False  # the child has not read for READ_AHEAD_AFTER: read ahead into the ring
        self.up_seen = False  # poll has said upstream is ready (before that, 0 bytes is not EOF)
        self.poller = select.poll()
        self.poller.register(stop_fd, select.POLLIN)
        self.registered: dict[int, int] = {}

    def run(self) -> None:
        poll = self.poller.poll
        monotonic = time.monotonic
        while True:
            if self.downstream < 0:
                self._open_downstream()
            if not self.upstream_open and not self.ring.size and self.downstream >= 0:
                return  # all out, and the child's FIFO is open: closing it is the child's EOF
            timeout = self._register(monotonic())
            began = monotonic()
            events = poll(timeout)
            if self.first is not None:
                self._account(monotonic() - began)
            if not events:
                self.ahead = self.full_since is not None  # the child is not reading: read ahead
                continue
            if not self._handle(events):
                return

    def _register(self, now: float) -> int | None:
        """Say what to wait for; returns the poll timeout in ms (None: no timeout)."""
        ring = self.ring
        can_pull = self.upstream_open and ring.has_room()
        if self.downstream < 0:  # the child has not opened its FIFO yet: read ahead
            self._want(self.upstream, select.POLLIN if can_pull else 0)
            return int(OPEN_RETRY * 1000)
        if self.full_since is None and ring.size:
            self.full_since = now  # the ring holds data: wait for room in the child's FIFO first
        if self.full_since is None:  # the common case: upstream straight to the child
            self._want(self.upstream, select.POLLIN if self.upstream_open else 0)
            # Always registered: with no data to write, POLLERR still says the child closed it.
            self._want(self.downstream, select.POLLERR)
            return None
        self._want(self.upstream, select.POLLIN if self.ahead and can_pull else 0)
        self._want(self.downstream, select.POLLOUT)
        if self.ahead or not self.upstream_open:
            return None
        return max(0, int((self.full_since + READ_AHEAD_AFTER - now) * 1000) + 1)

    def _handle(self, events: list[tuple[int, int]]) -> bool:
        """Act on what ``poll`` said; False once the epoch is over."""
        up_ready = down_ready = False
        for fd, revents in events:
            if fd == self.stop_fd:
                self.ended = "stopped"
                return False
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
            self.full_since = time.monotonic()
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
        A whole FIFO's worth moved means it is full now: wait for room, without a call to hear
        EAGAIN. False once the child has closed its end."""
        count = _splice(self.upstream, self.downstream, self.ring.pipe_size)
        if count is None:
            if not room:
                self.full_since = time.monotonic()  # the child's FIFO is full: wait for room
            return True
        if count < 0:
            self.ended = "child closed"
            return False
        self._moved_upstream(count)
        self.moved += count
        if count >= self.down_size:
            self.full_since = time.monotonic()
        return True

    def _moved_upstream(self, count: int) -> None:
        if count == 0:
            self.upstream_open = False  # a 0-byte splice after readiness: real EOF
        elif self.first is None:
            self.first = time.monotonic()

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

    def _want(self, fd: int, events: int) -> None:
        if events:
            if self.registered.get(fd) != events:
                (self.poller.modify if fd in self.registered else self.poller.register)(fd, events)
                self.registered[fd] = events
        elif fd in self.registered:
            self.poller.unregister(fd)
            del self.registered[fd]


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


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
        self.threads = [
            ChannelRelay(spec, emit, self._stop_r, ring, self.plan.pipe_size)
            for spec, ring in zip(channels, self.plan.rings, strict=True)
        ]

    def describe(self) -> dict[str, object]:
        """Fields for ``pipe_relay_started``: what each ring may hold, and the budget behind it."""
        return {
            "ring_bytes": self.channels[0].ring_bytes if self.channels else 0,
            "rings": {spec.name: ring for spec, ring in zip(self.channels, self.plan.rings, strict=True)},
            "pipe_budget": self.plan.describe(),
        }

    def start(self) -> None:
        """Check and make the relay dirs, mirror epoch 0, start a thread per channel. A dir that
        cannot be used raises ``UsageError`` before anything is started."""
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
        for thread in self.threads:
            try:
                thread.prepare()
            except OSError as error:
                raise UsageError(
                    f"--pipe-relay-dir {thread.spec.relay_dir}: cannot create the FIFO {error.filename}: "
                    f"{error.strerror}"
                ) from None
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop every thread, then remove what they created (FIFOs, EOF files), nothing else."""
        os.write(self._stop_w, b"x")
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        for thread in self.threads:
            thread.fifos.remove_all()
        for relay_dir in self._made_dirs:
            with contextlib.suppress(OSError):  # not empty: something that is not ours is in it
                os.rmdir(relay_dir)
        os.close(self._stop_r)
        os.close(self._stop_w)
