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

from smsupervise.linux.pipes import PIPE_SIZE, raise_pipe_size
from smsupervise.pipemode.ring import Ring

SPLICE_F_MOVE = 1
SPLICE_F_NONBLOCK = 2
SPLICE_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK
OPEN_RETRY = 0.005  # how often to retry opening the child's FIFO for writing (ENXIO: no reader yet)
APPEAR_POLL = 0.02  # how often to look for the platform's next FIFO

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
    """Relays one channel, epoch after epoch, until stopped."""

    def __init__(self, spec: ChannelSpec, emit: Emit, stop_fd: int) -> None:
        super().__init__(name=f"pipe-relay-{spec.name}", daemon=True)
        self.spec = spec
        self.emit = emit
        self.stop_fd = stop_fd  # readable once the relay must stop

    def prepare(self) -> None:
        """Before the child starts: clear FIFOs left in our dir by an earlier run, and mirror an epoch 0
        that already exists upstream (SageMaker creates it before the container starts), so the
        training code finds ``<ch>_0`` at once."""
        prefix = f"{self.spec.name}_"
        for name in os.listdir(self.spec.relay_dir):
            if name.startswith(prefix) and name[len(prefix) :].isdigit():
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.spec.relay_dir, name))
        if _is_fifo(os.path.join(self.spec.upstream_dir, f"{prefix}0")):
            os.mkfifo(os.path.join(self.spec.relay_dir, f"{prefix}0"), 0o660)

    def _stopping(self) -> bool:
        readable, _, _ = select.select([self.stop_fd], [], [], 0)
        return bool(readable)

    def run(self) -> None:
        ring = Ring(self.spec.ring_bytes)
        try:
            epoch = 0
            while not self._stopping():
                upstream_path = os.path.join(self.spec.upstream_dir, f"{self.spec.name}_{epoch}")
                if not self._wait_for(upstream_path):
                    return
                stats = self._epoch(epoch, upstream_path, ring)
                self.emit("pipe_epoch_done", stats._asdict())
                if stats.ended == "stopped":
                    return
                epoch += 1
        except Exception as error:  # reported as an event; the job goes on
            reason = f"{type(error).__name__}: {error}"
            self.emit("pipe_relay_failed", {"channel": self.spec.name, "error": reason})
        finally:
            ring.close()

    def _wait_for(self, path: str) -> bool:
        """Until the platform's FIFO for the epoch exists; False if we were stopped first."""
        while True:
            if _is_fifo(path):
                return True
            readable, _, _ = select.select([self.stop_fd], [], [], APPEAR_POLL)
            if readable:
                return False

    def _epoch(self, epoch: int, upstream_path: str, ring: Ring) -> EpochStats:
        ours = os.path.join(self.spec.relay_dir, f"{self.spec.name}_{epoch}")
        if not _is_fifo(ours):  # epoch 0 may have been made by prepare()
            os.mkfifo(ours, 0o660)
        upstream = os.open(upstream_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        raise_pipe_size(upstream)
        pump = _Pump(upstream, ours, ring, self.stop_fd)
        cpu_start = time.thread_time()
        ring.peak = 0
        try:
            pump.run()
        finally:
            if pump.ended in ("child closed", "stopped"):
                ring.discard()
            os.close(upstream)  # a producer still writing gets EPIPE: on to its next epoch
            if pump.downstream >= 0:
                os.close(pump.downstream)  # EOF for the child
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ours)
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

    The loop is shaped for few system calls per wake-up (the relay's CPU per GB is a target): one
    ``poll``, then one splice per ready FIFO, never a speculative splice that would only say EAGAIN.
    """

    def __init__(self, upstream: int, downstream_path: str, ring: Ring, stop_fd: int) -> None:
        self.upstream = upstream
        self.downstream_path = downstream_path
        self.downstream = -1
        self.ring = ring
        self.stop_fd = stop_fd
        self.upstream_open = True
        self.ended = "eof"
        self.moved = 0
        self.first: float | None = None
        self.starved = self.bound = self.wait_open = 0.0
        self.poller = select.poll()
        self.poller.register(stop_fd, select.POLLIN)
        self.registered: dict[int, int] = {}

    def run(self) -> None:
        ring = self.ring
        poll = self.poller.poll
        monotonic = time.monotonic
        while True:
            if self.downstream < 0:
                self._open_downstream()
            if not self.upstream_open and not ring.size and self.downstream >= 0:
                return  # all out, and the child's FIFO is open: closing it is the child's EOF
            self._want(self.upstream, select.POLLIN if self.upstream_open and ring.has_room() else 0)
            if self.downstream >= 0:
                # Always registered: with no data to write, POLLERR still says the child closed it.
                self._want(self.downstream, select.POLLOUT if ring.size else select.POLLERR)
            began = monotonic()
            events = poll(None if self.downstream >= 0 else OPEN_RETRY * 1000)
            if self.first is not None:
                self._account(monotonic() - began)
            up_ready = down_ready = False
            for fd, revents in events:
                if fd == self.stop_fd:
                    self.ended = "stopped"
                    return
                if fd == self.downstream and revents & select.POLLERR and not ring.size:
                    self.ended = "child closed"  # nothing was in flight: nothing else to tell
                    return
                if fd == self.upstream:
                    up_ready = True  # readiness: a writer is or was there, so a 0-byte splice is EOF
                else:
                    down_ready = True
            if (down_ready or (up_ready and ring.size)) and self.downstream >= 0 and not self._drain_ring():
                return
            if up_ready and not self._pull():
                return

    def _account(self, waited: float) -> None:
        if self.downstream < 0:
            self.wait_open += waited
            self.bound += waited
        elif self.ring.size == 0:
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
        raise_pipe_size(self.downstream)

    def _pull(self) -> bool:
        """Upstream is ready: straight to the child when the ring is empty, else (or when the child's
        FIFO is full) into the ring. False once the child has closed its end."""
        ring = self.ring
        if ring.size == 0 and self.downstream >= 0:
            count = _splice(self.upstream, self.downstream, PIPE_SIZE)
            if count is not None:
                if count < 0:
                    self.ended = "child closed"
                    return False
                self._moved_upstream(count)
                self.moved += count
                return True
        tail = ring.tail_room()
        if tail is not None:
            count = _splice(self.upstream, tail[1], tail[3] - tail[2])
            if count is None:
                ring.full(tail)
            else:
                self._moved_upstream(count)
                ring.added(tail, count)
        return True

    def _moved_upstream(self, count: int) -> None:
        if count == 0:
            self.upstream_open = False  # a 0-byte splice after readiness: real EOF
        elif self.first is None:
            self.first = time.monotonic()

    def _drain_ring(self) -> bool:
        """Ring -> child, oldest first, until the child's FIFO is full; False if the child has closed."""
        head = self.ring.head()
        while head is not None:
            count = _splice(head[0], self.downstream, head[2])
            if count is None:
                return True
            if count < 0:
                self.ended = "child closed"
                return False
            self.ring.consumed(head, count)
            self.moved += count
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
    """All channels' relays: ``start()`` before the child runs, ``stop()`` after it has exited."""

    def __init__(self, channels: tuple[ChannelSpec, ...], emit: Emit) -> None:
        self.channels = channels
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self.threads = [ChannelRelay(spec, emit, self._stop_r) for spec in channels]

    def start(self) -> None:
        for spec in self.channels:
            os.makedirs(spec.relay_dir, mode=0o755, exist_ok=True)
        for thread in self.threads:
            thread.prepare()
            thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        os.write(self._stop_w, b"x")
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        os.close(self._stop_r)
        os.close(self._stop_w)
