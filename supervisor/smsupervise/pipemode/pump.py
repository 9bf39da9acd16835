"""The splice loop of one channel's epoch (``SplicePump``): the only module that calls ``os.splice``
(the feeder, feeder.py, calls libc's: a signal must interrupt it).

What it moves and why (the data path, the ring, the edge-triggered waits): relay.py's docstring;
the relay thread drives each pump (``on_poll`` when it has events or its time has come, then
``arm``, which says when that time is).
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import sys
import termios
from collections.abc import Callable

from smsupervise.linux.pipes import raise_pipe_size
from smsupervise.pipemode.channel import EPOCH_OVER, ChannelRelay
from smsupervise.pipemode.feeder import CHILD_CLOSED, EOF, FAILED, REPOKE
from smsupervise.pipemode.ring import Ring

SPLICE_F_MOVE = 1
SPLICE_F_NONBLOCK = 2
SPLICE_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK
OPEN_RETRY = 0.005  # how often to retry opening the child's FIFO for writing (ENXIO: no reader yet)
READ_AHEAD_AFTER = 0.010  # the child's FIFO full this long: it is computing (not descheduled): read ahead
TURN_BYTES = 2 << 20  # what one channel may move per turn before the others are served (fairness)
TURN_MOVES = 8  # and in at most this many splices


class SplicePump:
    """One epoch of one channel: move bytes until EOF is delivered, the child closes, or a stop.

    **The direct path** (the ring is empty and the child's FIFO has room: the common case) is the
    feeder's (feeder.py): a thread of the channel's, asleep in a blocking splice straight from the
    platform's FIFO into the child's, as the C loop is. The pump hands it over (``_feed``) and takes
    it back when the feeder returns. While the feeder has it, the two FIFOs are out of the relay
    thread's epoll (``Poller.mute``), and every ``READ_AHEAD_AFTER`` it looks whether the child has
    stalled: no byte moved, the child's FIFO full, data waiting upstream. Then the child is
    computing, and the feeder is recalled so that the pump reads ahead. The same look finds a child
    that has closed its FIFO (POLLERR) while the feeder waits on an idle producer.

    **The ring** is the pump's: before the child opens its FIFO and while it computes, the pump
    splices upstream into the ring (``_fill``); when the child reads again, the ring drains first
    (``_drain``), so it empties again and the direct path is handed back. Each byte moves once
    when the child keeps up.

    **Readiness** comes from the relay thread's edge-triggered epoll: each FIFO is registered once
    and an event only says that something changed (the producer's write ended, the child read from
    a full FIFO), never that a writer is merely mid-write, so no splice is made into the middle of a
    1 MiB ``write`` and spins on the pipe's lock. The pump keeps what it knows in flags, set by
    events and cleared only by a splice that proved the opposite:

    * ``up``: upstream may have data; cleared when a splice found it empty.
    * ``down``: the child's FIFO may have room; cleared when a splice found it full.

    **No lost wake-up**: each clear happens after a splice that saw, under the pipe locks, the
    state that makes the kernel wake epoll on its change (a write into an empty pipe, a read from
    a full one, a close); so a cleared flag is set again by an event if the fd ever becomes ready.
    When the feeder returns, both flags are set (not known: the next splice finds out) and the
    FIFOs are heard again (``Poller.unmute`` reports whichever is ready at once). The ring's pipes
    are ours: their state is bookkept, not waited on, and looked at before every wait (``arm``): a
    channel that can still move is served again before the thread sleeps (a turn moves at most
    ``TURN_BYTES``, for fairness between channels).

    No clock is read here: ``now`` is the relay thread's one reading per wait.
    """

    def __init__(
        self, upstream: int, downstream_path: str, ring: Ring, owner: ChannelRelay, now: float
    ) -> None:
        self.upstream = upstream
        self.downstream_path = downstream_path
        self.downstream = -1
        self.open_at = 0.0  # when to try opening the child's FIFO next (ENXIO: no reader yet)
        self.ring = ring
        self.owner = owner
        self.feeder = owner.feeder
        self.now = now  # the wait's return time, for the timestamps taken while acting on it
        self.up = self.down = False  # readiness as known (class docstring)
        self.hup = False  # an event has said the producer closed (no more events from upstream)
        self.upstream_open = True
        self.ended = "eof"
        self.moved = 0
        self.first: float | None = None
        self.seen = now  # accounted up to here (``account``), from the first byte on
        self.starved = self.bound = self.wait_open = 0.0
        self.full_since: float | None = None  # the child's FIFO is full (or the ring holds data)
        self.ahead = False  # the child has not read for READ_AHEAD_AFTER: read ahead into the ring
        self.up_seen = False  # an event has said upstream is ready (before that, 0 bytes is not EOF)
        self.fed = False  # the feeder has the direct path
        self.check_at = 0.0  # while fed: when to look for a stalled child (or poke a recall again)
        self.checked = 0  # while fed: ``moved`` at the last look
        self.full = False  # while fed: the child's FIFO was full at the last look
        self.closing = False  # while fed: the child has closed its FIFO (POLLERR at a look)
        self.room = select.poll()  # while fed: whether the child's FIFO has room (POLLOUT)
        owner.poller.add(upstream, select.EPOLLIN, owner)  # an event at once if it is ready now

    def arm(self, now: float) -> float | None:
        """Before the wait: seconds until it must be looked at again (None: no limit; 0: it can
        move now), or ``EPOCH_OVER`` when everything has been delivered."""
        if self.fed:
            return max(0.0, self.check_at - now)
        if self.downstream < 0 and now >= self.open_at:
            self.open_at = now + OPEN_RETRY  # at most every OPEN_RETRY: other channels may be busy
            self._open_downstream()
        if not self.upstream_open and not self.ring.size and self.downstream >= 0:
            return EPOCH_OVER  # all out, and the child's FIFO is open: closing it is the child's EOF
        if self.full_since is not None and not self.ahead and now - self.full_since >= READ_AHEAD_AFTER:
            self.ahead = True  # the child has not read for a while: it is computing, read ahead
        if self._next() is not None:
            return 0.0
        wait = None
        if self.downstream < 0:
            wait = self.open_at - now
        elif self.full_since is not None and not self.ahead and self.upstream_open:
            wait = self.full_since + READ_AHEAD_AFTER - now
        return wait

    def on_poll(self, events: list[tuple[int, int]], now: float) -> bool:
        """After a wait that brought this pump events, or reached the time ``arm`` asked for
        (``events`` are this pump's); False once the epoch is over."""
        self.now = now
        self.account(now)
        if self.fed:
            return self._while_fed(now)  # its FIFOs are out of the epoll set: no events
        for fd, flags in events:
            if fd == self.upstream:
                self.up = self.up_seen = True  # a writer is or was there: a 0-byte splice is EOF
                if flags & select.EPOLLHUP:
                    self.hup = True  # no writer left: no event will come, splice until it says 0
            else:
                if flags & select.EPOLLERR and not self.ring.size:
                    self.ended = "child closed"  # nothing was in flight: nothing else to tell
                    return False
                self.down = True
                self.ahead = False  # the child reads again: drain the ring before reading ahead
                self.full_since = now if self.ring.size else None
        return self._turn()

    def waiting_on_child(self) -> bool:
        """Whether data is held back by the child right now (not opened, FIFO full, ring holding)."""
        if self.fed:
            return self.full
        return self.downstream < 0 or self.full_since is not None or self.ring.size > 0

    def reclaim(self) -> bool:
        """Take the direct path back from the feeder, waiting for it (a stop, a failure): True when
        the fds are the pump's to close; False when the feeder did not return in time and will close
        them itself when it does (no fd is closed under a thread that is using it)."""
        if self.fed:
            fds = (self.upstream, self.downstream)
            if not self.feeder.reclaim() and self.feeder.leave(fds):
                return False
            self.fed = False
        return True

    def _next(self) -> Callable[[], int] | None:
        """The move to make now, from what is known (no syscall), or None: wait for an event."""
        if self.downstream >= 0 and self.down:
            if self.ring.size:
                return self._drain
            if self.up and self.upstream_open:
                return self._feed
        if self.up and self.upstream_open and (self.downstream < 0 or self.ahead) and self.ring.has_room():
            return self._fill
        return None

    def _turn(self) -> bool:
        """Make moves until none is possible or the turn's share is used; False once the child
        has closed its end."""
        budget = TURN_BYTES
        for _ in range(TURN_MOVES):
            move = self._next()
            if move is None:
                break
            count = move()
            if count < 0:
                return False
            if count == 0:
                break
            budget -= count
            if budget <= 0:
                break
        return True

    def _feed(self) -> int:
        """Hand the direct path to the feeder; 0 (the turn is over). If no thread can be started
        (RuntimeError), nothing is handed over and the channel fails (its FIFO gives EOF)."""
        self.checked = self.moved
        self.feeder.give(self)  # it may return before the lines below: the relay thread hears it later
        poller = self.owner.poller
        poller.mute(self.upstream)
        poller.mute(self.downstream)
        self.fed = True
        self.closing = self.full = False
        self.check_at = (self.now // READ_AHEAD_AFTER + 2) * READ_AHEAD_AFTER  # 10-20 ms, on the grid
        self.full_since = None
        return 0

    def _while_fed(self, now: float) -> bool:
        """A look at the child, or the feeder's return."""
        why = self.feeder.why
        if why is not None:
            return self._take_back(why, now)
        if now < self.check_at:
            return True
        if not self.feeder.recalled:
            moved, self.checked = self.moved != self.checked, self.moved
            room = self.room.poll(0)  # POLLOUT: it has room; POLLERR: the child has closed it
            self.full = not room
            # closed while the feeder may wait on an idle producer, or data waits and it does not read
            self.closing = bool(room) and bool(room[0][1] & select.POLLERR)
            if not (self.closing or (self.full and not moved and _pending(self.upstream))):
                self.check_at = (now // READ_AHEAD_AFTER + 1) * READ_AHEAD_AFTER  # a grid: one wake-up
                return True  # checks every channel
        self.feeder.recall()  # and again after REPOKE: a signal between its check and its call is lost
        self.check_at = now + REPOKE
        return True

    def _take_back(self, why: str, now: float) -> bool:
        """The feeder has returned: the path is the pump's again; False once the epoch is over."""
        self.fed = False
        stalled, self.full = self.feeder.recalled and self.full, False
        if why == FAILED:
            code = self.feeder.errno
            raise OSError(code, f"splice into the child's FIFO: {os.strerror(code)}")
        if why == CHILD_CLOSED or self.closing:
            self.ended = "child closed"
            return False
        poller = self.owner.poller
        poller.unmute(self.upstream)  # an event at once for whichever is ready now
        poller.unmute(self.downstream)
        self.up = self.down = True  # not known: the next splice finds out
        if why == EOF:
            self.upstream_open = False
        elif stalled:  # recalled: the child is computing, read ahead
            self.down = False
            self.full_since = now - READ_AHEAD_AFTER
            self.ahead = True
        return self._turn()

    def account(self, now: float) -> None:
        """Charge the time since the last look to the state the pump has been in since (nothing
        changes it between looks: the relay thread looks at a pump only for an event or a time)."""
        first = self.first
        if first is None:
            return
        if first > now:  # the feeder's stamp, read after this turn's clock reading: not in the future
            self.first = first = now
        waited, self.seen = now - max(self.seen, first), now
        if self.fed:  # sampled: where the time went is where the child's FIFO was at the last look
            if self.full:
                self.bound += waited
            else:
                self.starved += waited
        elif self.downstream < 0:
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
        os.set_blocking(self.downstream, True)  # for the feeder's splice (module docstring)
        raise_pipe_size(self.downstream, self.ring.pipe_size)
        self.room.register(self.downstream, select.POLLOUT)
        self.owner.poller.add(self.downstream, select.EPOLLOUT, self.owner)  # EPOLLOUT at once

    def _drain(self) -> int:
        """Ring -> child, oldest pipe first. It holds ``held`` bytes and all are asked for, so
        moving less, or EAGAIN, means the child's FIFO is full (``down`` cleared). -1 once the child
        has closed its end."""
        head = self.ring.head()
        assert head is not None  # _next: the ring holds data
        asked = head.held
        count = _splice(head.read_fd, self.downstream, asked)
        if count is None:
            count = 0
        elif count < 0:
            self.ended = "child closed"
            return -1
        else:
            self.ring.consumed(head, count)
            self.moved += count
        if count < asked:
            self.down = False
            self.full_since = self.now
        elif not self.ring.size:
            self.full_since = None
        return count

    def _fill(self) -> int:
        """Upstream -> the ring's tail (the child has not opened its FIFO, or is computing).
        EAGAIN means a writer is there and upstream is empty, or the tail's slots are used up
        (the kernel checks upstream first: at EOF it passes, and the full tail then says EAGAIN,
        so with no writer left EAGAIN always means a full tail). An empty tail has room, else
        upstream is asked (``FIONREAD``): empty clears ``up``, holding data (or no writer left)
        means the tail is full, and the next pipe is tried at once (returns 1 then). Stopping
        short says the same, except that with no writer left upstream is spliced again (to EOF)."""
        ring = self.ring
        tail = ring.tail_room()
        if tail is None:
            return 0
        space = tail.space()
        count = _splice(self.upstream, tail.write_fd, space)
        if count is None:
            if tail.held and (self.hup or _pending(self.upstream)):
                ring.full(tail)
                return 1
            if not self.hup:  # a writer is there and upstream is empty: its next write is an event
                self.up = False
            return 0
        if count == 0:
            self._upstream_empty()
            return 0
        self._moved_upstream()
        ring.added(tail, count)
        if count == space or self.hup:
            return count
        if _pending(self.upstream):
            ring.full(tail)
        else:
            self.up = False
        return count

    def _upstream_empty(self) -> None:
        """A 0-byte splice: EOF once an event has said a writer was there; before, no writer yet
        (its open and its first write each bring an event)."""
        if self.up_seen:
            self.upstream_open = False
        else:
            self.up = False

    def _moved_upstream(self) -> None:
        if self.first is None:
            self.first = self.seen = self.now


def _pending(fd: int) -> int:
    """Bytes in a pipe now (``FIONREAD``)."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)


def _splice(src: int, dst: int, count: int) -> int | None:
    """Bytes moved; 0 at EOF of ``src``; None when it would block; -1 when ``dst`` has no reader."""
    try:
        return os.splice(src, dst, count, None, None, SPLICE_FLAGS)  # positional: no keyword parsing
    except BlockingIOError:
        return None
    except BrokenPipeError:
        return -1
