"""The relay's read-ahead: a FIFO queue of 1 MiB pipes (why pipes and not a memfd: relay.py)."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

from smsupervise.linux.pipes import PIPE_SIZE, raise_pipe_size


@dataclass(slots=True)
class RingPipe:
    """One pipe of the ring and what it holds.

    ``room`` is what we still try to put in: a pipe holds ``size`` bytes only in whole pages; small
    writes upstream arrive as small buffers, each taking one of its slots, so a pipe can be full
    with fewer bytes (see ``Ring.full``).
    """

    read_fd: int
    write_fd: int
    held: int  # bytes in it now
    room: int  # bytes we may still put in, counted from empty (``held`` included)
    size: int  # its capacity as the kernel granted it

    def space(self) -> int:
        """How many more bytes to try to splice in."""
        return self.room - self.held


class Ring:
    """A FIFO queue of pipes; ``head`` is read from, ``tail`` written to."""

    def __init__(self, capacity: int, pipe_size: int = PIPE_SIZE) -> None:
        self.capacity = capacity  # bytes wanted (the ring's share of the pipe budget)
        self.pipe_size = pipe_size  # what each pipe is raised to
        self.pipes: deque[RingPipe] = deque()
        self.spare: list[RingPipe] = []
        self.size = 0  # bytes held
        self.peak = 0  # the most it has held
        self.allocated = 0  # bytes of pipe capacity held by the ring
        self.refused: str | None = None  # why the ring could not grow, if it could not

    def tail_room(self) -> RingPipe | None:
        """The pipe to splice into, growing the ring if it may; None when full."""
        if self.pipes and self.pipes[-1].held < self.pipes[-1].room:
            return self.pipes[-1]
        if self.spare and self.size < self.capacity:
            self.pipes.append(self.spare.pop())
            return self.pipes[-1]
        if self.refused is not None or (self.pipes and self.allocated + self.pipe_size > self.capacity):
            return None
        return self._grow()

    def _grow(self) -> RingPipe | None:
        """One more pipe; the first is kept whatever size the kernel gives it (never fail a run)."""
        try:
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as error:
            self.refused = f"no more pipes: {error.strerror}"
            return None
        size = raise_pipe_size(write_fd, self.pipe_size)
        if size < self.pipe_size and self.allocated:
            os.close(read_fd)
            os.close(write_fd)
            self.refused = (
                f"the kernel refused to raise a ring pipe to {self.pipe_size} bytes (got {size}): "
                "the user's pipe pages (pipe-user-pages-soft) are used up"
            )
            return None
        self.allocated += size
        self.pipes.append(RingPipe(read_fd, write_fd, 0, size, size))
        return self.pipes[-1]

    def has_room(self) -> bool:
        """Whether ``tail_room`` may give a pipe (without growing the ring to find out)."""
        if self.pipes and self.pipes[-1].held < self.pipes[-1].room:
            return True
        if self.spare and self.size < self.capacity:
            return True
        return self.refused is None and (not self.pipes or self.allocated + self.pipe_size <= self.capacity)

    def head(self) -> RingPipe | None:
        """The oldest pipe holding bytes, if any."""
        return self.pipes[0] if self.pipes and self.pipes[0].held > 0 else None

    def added(self, pipe: RingPipe, count: int) -> None:
        """``count`` bytes were spliced into ``pipe`` (the tail)."""
        pipe.held += count
        self.size += count
        self.peak = max(self.peak, self.size)

    def full(self, pipe: RingPipe) -> None:
        """A splice into ``pipe`` would block although upstream had data: its slots are used up."""
        if pipe.held:
            pipe.room = pipe.held

    def consumed(self, pipe: RingPipe, count: int) -> None:
        """``count`` bytes were spliced out of ``pipe`` (the head)."""
        pipe.held -= count
        self.size -= count
        if pipe.held == 0:
            pipe.room = pipe.size
            if len(self.pipes) > 1:
                self.spare.append(self.pipes.popleft())

    def discard(self) -> None:
        """Throw away what is held (the child closed its FIFO early), and return to the empty shape:
        one pipe in the queue, the rest spare, every pipe's room whole again."""
        for pipe in self.pipes:
            while pipe.held > 0:
                try:
                    chunk = os.read(pipe.read_fd, min(pipe.held, self.pipe_size))
                except BlockingIOError:
                    break
                if not chunk:
                    break
                pipe.held -= len(chunk)
            pipe.held, pipe.room = 0, pipe.size
        while len(self.pipes) > 1:
            self.spare.append(self.pipes.pop())
        self.size = 0

    def close(self) -> None:
        """Close every pipe (the relay thread is done)."""
        for pipe in [*self.pipes, *self.spare]:
            os.close(pipe.read_fd)
            os.close(pipe.write_fd)
        self.pipes.clear()
        self.spare.clear()
