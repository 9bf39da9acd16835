"""The child's stdout and stderr: pipes we create, read on readiness, and render to our own fds.

``json`` turns every line into one JSON object (``logstream``); ``raw`` and ``text`` pass the
bytes through untouched (``raw`` exists for SageMaker MetricDefinitions regexes anchored at ``^``).
EOF is not exit: after the main child exits, ``drain`` reads on until EOF or the drain timeout, so a
grandchild holding a pipe cannot keep the container alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque

from smsupervise.linux import proctree
from smsupervise.linux.pipes import raise_pipe_size
from smsupervise.settings import Settings
from smsupervise.streams.events import EventLog
from smsupervise.streams.framing import RankTags, RecordFormat, SeqCounter, StreamFramer
from smsupervise.streams.recent import Recent
from smsupervise.streams.watch import BENCH_PATTERN_ENV, ProgressWatch
from smsupervise.streams.writer import Output

CHUNK = 65536  # per read: 64 KiB chunks keep allocations below glibc's mmap threshold
# One read is framed in one loop iteration, so a read is sized to hold about this many lines
# (~1 ms of framing): a flood of short lines cannot keep signals or the control socket waiting
# for longer than that. Lines of 32 bytes and more fill a whole CHUNK.
LINES_PER_READ = 2048
MIN_READ = 4096
TAIL_BYTES = 16384  # stderr kept for the failure reason


class _Stream:
    """One of the child's output pipes."""

    def __init__(
        self, name: str, read_fd: int, write_fd: int, output: Output, framer: StreamFramer | None
    ) -> None:
        self.name = name
        self.read_fd = read_fd
        self.write_fd: int | None = write_fd
        self.output = output
        self.framer = framer
        self.eof = asyncio.Event()
        self.paused = False
        self.last_data = 0.0
        self.bytes = 0
        self.read_size = CHUNK
        self.timer: asyncio.TimerHandle | None = None


class ChildOutput:
    """Owns the pipes between the child and our stdout/stderr."""

    def __init__(
        self,
        settings: Settings,
        log: EventLog,
        outputs: dict[int, Output],
        counter: SeqCounter | None = None,
        recent: Recent | None = None,
    ) -> None:
        self.settings = settings
        self.recent = recent  # the debug socket's ring of recent output, when there is one
        self.log = log
        self.outputs = outputs
        self.counter = counter if counter is not None else SeqCounter()  # seq: one counter per run
        self.tail: deque[bytes] = deque()
        self._tail_size = 0
        self.streams: list[_Stream] = []
        # The stall watchdog's seam: every chunk read is shown to it (streams/watch.py). Off
        # unless set; until the watchdog's option lands, only the benchmark turns it on.
        self.watch: ProgressWatch | None = None

    def open(self) -> tuple[int, int]:
        """Create both pipes; returns the write ends for the child's fds 1 and 2."""
        ends = []
        for name in ("stdout", "stderr"):
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
            raise_pipe_size(write_fd)
            os.set_blocking(read_fd, False)
            target = 1 if name == "stdout" or self.settings.merge_streams else 2
            self.streams.append(_Stream(name, read_fd, write_fd, self.outputs[target], None))
            ends.append(write_fd)
        return ends[0], ends[1]

    def start(self, pid: int, host: str | None, job: str | None, tags: RankTags | None = None) -> None:
        """After the spawn: drop our copies of the write ends and start reading."""
        loop = asyncio.get_running_loop()
        if self.watch is None and os.environ.get(BENCH_PATTERN_ENV):
            self.watch = ProgressWatch(os.environ[BENCH_PATTERN_ENV])
        fmt = RecordFormat(
            pid=pid, host=host, job=job, max_line_bytes=self.settings.max_line_bytes, tags=tags
        )
        for stream in self.streams:
            if stream.write_fd is not None:
                os.close(stream.write_fd)
                stream.write_fd = None
            if self.settings.log_format == "json":
                stream.framer = StreamFramer(stream.name, fmt, self.counter, self.settings.progress_interval)
            loop.add_reader(stream.read_fd, self._on_readable, stream)

    def close_write_ends(self) -> None:
        """If the spawn failed: nobody will write."""
        for stream in self.streams:
            if stream.write_fd is not None:
                os.close(stream.write_fd)
                stream.write_fd = None

    def stderr_tail(self) -> bytes:
        return b"".join(self.tail)[-TAIL_BYTES:]

    # -- reading -------------------------------------------------------------------------------
    def _on_readable(self, stream: _Stream) -> None:
        if not self._read_once(stream):
            return
        framer = stream.framer
        if framer is not None and (framer.pending or framer.progress_due(stream.last_data) is not None):
            self._arm_timer(stream)
        if stream.output.congested and not stream.paused:
            stream.paused = True  # backpressure: the child blocks on its full pipe, nothing is lost
            asyncio.get_running_loop().remove_reader(stream.read_fd)
            stream.output.when_drained(lambda: self._resume(stream))

    def _read_once(self, stream: _Stream) -> bool:
        """Read one chunk and write its records; False when there was nothing (or EOF)."""
        try:
            data = os.read(stream.read_fd, stream.read_size)
        except (BlockingIOError, InterruptedError):
            return False
        if not data:
            self._finish(stream)
            return False
        now = time.time()
        stream.last_data = now
        stream.bytes += len(data)
        if stream.name == "stderr":
            self._keep_tail(data)
        if self.watch is not None:
            self.watch.look(data, now)
        framer = stream.framer
        if framer is None:
            self._emit(stream, data)
            return True
        # The records this read made are the seq numbers it took: the ring's counter and the next
        # read's size need no count of newlines (each a pass over the bytes, with no memchr).
        before = self.counter.value
        rendered = framer.feed(data, now)
        records = self.counter.value - before
        stream.read_size = read_size_for(len(data), records)
        self._emit(stream, rendered, records)
        return True

    def _emit(self, stream: _Stream, data: bytes, records: int | None = None) -> None:
        """Write ``data`` (``records`` complete lines; None: count them) and keep it for the ring."""
        stream.output.write(data, stream.name)
        if self.recent is not None:
            self.recent.add(stream.name, data, records)

    def _resume(self, stream: _Stream) -> None:
        if stream.paused and not stream.eof.is_set():
            stream.paused = False
            asyncio.get_running_loop().add_reader(stream.read_fd, self._on_readable, stream)

    def _keep_tail(self, data: bytes) -> None:
        self.tail.append(data)
        self._tail_size += len(data)
        while self._tail_size - len(self.tail[0]) >= TAIL_BYTES:
            self._tail_size -= len(self.tail.popleft())

    def _arm_timer(self, stream: _Stream) -> None:
        """One timer per stream: flush a silent tail, or let a throttled progress state out."""
        if stream.timer is not None:
            return
        assert stream.framer is not None
        due = stream.last_data + self.settings.flush_after if stream.framer.pending else float("inf")
        progress = stream.framer.progress_due(time.time())
        if progress is not None:
            due = min(due, progress)
        if due != float("inf"):
            delay = max(0.0, due - time.time())
            stream.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, stream)

    def _on_timer(self, stream: _Stream) -> None:
        stream.timer = None
        framer = stream.framer
        if framer is None or stream.eof.is_set():
            return
        now = time.time()
        self._emit(stream, framer.take_progress(now))
        if framer.pending and now - stream.last_data >= self.settings.flush_after:
            self._emit(stream, framer.flush(now))
        self._arm_timer(stream)

    def _finish(self, stream: _Stream) -> None:
        """EOF (or cut off): emit what is held, stop reading, close."""
        if stream.eof.is_set():
            return
        if stream.framer is not None:
            self._emit(stream, stream.framer.flush(time.time()))
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(stream.read_fd)
        os.close(stream.read_fd)
        stream.eof.set()

    # -- the end -------------------------------------------------------------------------------
    async def drain(self, timeout: float) -> None:
        """After the main child exits: read to EOF, but for at most ``timeout`` seconds."""
        waits = [asyncio.ensure_future(s.eof.wait()) for s in self.streams if not s.eof.is_set()]
        if not waits:
            return
        for stream in self.streams:
            self._resume(stream)  # a paused reader must not hold up the drain
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for wait in pending:
            wait.cancel()
        open_streams = [s for s in self.streams if not s.eof.is_set()]
        if not open_streams:
            return
        cut = []
        for stream in open_streams:
            inode = os.fstat(stream.read_fd).st_ino
            self._read_available(stream)
            if not stream.eof.is_set():
                cut.append({"stream": stream.name, "held_by": proctree.pipe_holders(inode)[:20]})
                self._finish(stream)
        if cut:
            self.log.warning(
                "output_cut_off",
                drain_timeout=timeout,
                streams=cut,
                hint="a process still holds the child's stdout/stderr after it exited; "
                "later output from it is discarded",
            )

    def _read_available(self, stream: _Stream) -> None:
        """What is in the pipe now (bounded: a writer may keep going)."""
        for _ in range(1024):
            if stream.eof.is_set() or not self._read_once(stream):
                return


def read_size_for(size: int, lines: int) -> int:
    """The next read's size after ``size`` bytes held ``lines`` lines: about ``LINES_PER_READ``
    lines of that length, between ``MIN_READ`` and ``CHUNK``."""
    if lines == 0:
        return CHUNK
    return max(MIN_READ, min(CHUNK, size * LINES_PER_READ // lines))
