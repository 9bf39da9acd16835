"""The relay's read-ahead: a FIFO queue of 1 MiB pipes (why pipes and not a memfd: relay.py)."""

from __future__ import annotations

import os
from collections import deque

from smsupervise.linux.pipes import PIPE_SIZE, raise_pipe_size


class Ring:
    """A FIFO queue of pipes; ``head`` is read from, ``tail`` written to."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity  # bytes wanted
        # [read_fd, write_fd, bytes_in, room, size]: ``room`` is what we still try to put in. A pipe
        # holds ``size`` bytes only in whole pages: small writes upstream arrive as small buffers,
        # each taking one of its slots, so a pipe can be full with fewer bytes (see ``full``).
        self.pipes: deque[list[int]] = deque()
        self.spare: list[list[int]] = []
        self.size = 0  # bytes held
        self.peak = 0  # the most it has held
        self.allocated = 0  # bytes of pipe capacity held by the ring
        self.refused: str | None = None  # why the ring could not grow, if it could not

    def tail_room(self) -> list[int] | None:
        """The pipe to splice into, growing the ring if it may; None when full."""
        if self.pipes and self.pipes[-1][2] < self.pipes[-1][3]:
            return self.pipes[-1]
        if self.spare and self.size < self.capacity:
            self.pipes.append(self.spare.pop())
            return self.pipes[-1]
        if self.refused is not None or (self.pipes and self.allocated + PIPE_SIZE > self.capacity):
            return None
        try:
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as error:
            self.refused = f"no more pipes: {error.strerror}"
            return None
        size = raise_pipe_size(write_fd)
        if size < PIPE_SIZE and self.allocated:
            os.close(read_fd)
            os.close(write_fd)
            self.refused = (
                f"the kernel refused to raise a ring pipe to {PIPE_SIZE} bytes (got {size}): "
                "the user's pipe pages (pipe-user-pages-soft) are used up"
            )
            return None
        self.allocated += size
        self.pipes.append([read_fd, write_fd, 0, size, size])
        return self.pipes[-1]

    def has_room(self) -> bool:
        if self.pipes and self.pipes[-1][2] < self.pipes[-1][3]:
            return True
        if self.spare and self.size < self.capacity:
            return True
        return self.refused is None and (not self.pipes or self.allocated + PIPE_SIZE <= self.capacity)

    def head(self) -> list[int] | None:
        return self.pipes[0] if self.pipes and self.pipes[0][2] > 0 else None

    def added(self, pipe: list[int], count: int) -> None:
        """``count`` bytes were spliced into ``pipe`` (the tail)."""
        pipe[2] += count
        self.size += count
        self.peak = max(self.peak, self.size)

    def full(self, pipe: list[int]) -> None:
        """A splice into ``pipe`` would block although upstream had data: its slots are used up."""
        if pipe[2]:
            pipe[3] = pipe[2]

    def consumed(self, pipe: list[int], count: int) -> None:
        pipe[2] -= count
        self.size -= count
        if pipe[2] == 0:
            pipe[3] = pipe[4]
            if len(self.pipes) > 1:
                self.spare.append(self.pipes.popleft())

    def discard(self) -> None:
        """Throw away what is held (the child closed its FIFO early), and return to the empty shape:
        one pipe in the queue, the rest spare, every pipe's room whole again."""
        for pipe in self.pipes:
            while pipe[2] > 0:
                try:
                    chunk = os.read(pipe[0], min(pipe[2], PIPE_SIZE))
                except BlockingIOError:
                    break
                if not chunk:
                    break
                pipe[2] -= len(chunk)
            pipe[2], pipe[3] = 0, pipe[4]
        while len(self.pipes) > 1:
            self.spare.append(self.pipes.pop())
        self.size = 0

    def close(self) -> None:
        for pipe in [*self.pipes, *self.spare]:
            os.close(pipe[0])
            os.close(pipe[1])
        self.pipes.clear()
        self.spare.clear()
