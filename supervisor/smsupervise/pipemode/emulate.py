"""``smsupervise-pipe-emulate``: SageMaker's side of Pipe mode, for local runs and tests.

For each channel it creates the FIFO ``<data dir>/<channel>_<N>`` and streams local data into it,
epoch after epoch, the way the platform does: ``open(O_WRONLY)`` blocks until the training code (or
smsupervise's relay) opens the FIFO; the data goes in with ``write()`` in 1 MiB chunks (the agent
copies network data the same way); the FIFO is closed at the end of the epoch, which is EOF for the
reader; a reader that closes early ends that epoch (EPIPE), and the next epoch starts. The next
epoch's FIFO is created as soon as the current one is opened, as the platform does by default.

Data: one file, or a directory of objects (files, in sorted path order). ``--recordio`` wraps each
object in a RecordIO record (what ``RecordWrapperType: RecordIO`` does); ``--gunzip`` decompresses
gzip objects on the way (what ``CompressionType: Gzip`` does).

``--rate MB/s`` plays the platform's throughput: each channel's stream is paced by a token bucket
over its write chunks (``Throttle``), so a reader sees the speed S3 would give it. The FIFO is
written non-blocking, so the time spent waiting on a full FIFO (the reader is behind: trainer-bound)
is measured exactly; the time the FIFO stood empty while the bucket held data back is the reader
waiting (input-starved). Both are in the ``epoch_streamed`` report.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import fcntl
import gzip
import io
import os
import re
import select
import stat
import struct
import sys
import termios
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import orjson

RECORDIO_MAGIC = 0xCED7230A
CHUNK = 1 << 20
MB = 1_000_000  # rates are in MB/s (decimal, as S3 and network figures are)
PACE = 0.004  # a throttled stream is written in chunks of this many seconds' worth of bytes
SLACK = 0.1  # how much of a stall of the reader the platform makes up afterwards (its buffering)
CATCH_UP = 1.0  # how far the writer may fall behind its schedule on a busy machine and make it up
# The API's ChannelName (CreateTrainingJob): no '/', so a FIFO ``<name>_<N>`` stays in the data dir.
CHANNEL_NAME = re.compile(r"[A-Za-z0-9.\-_]{1,64}")


def parse_rate(text: str) -> float | None:
    """``--rate``: MB/s as a positive number, or ``unlimited`` (None)."""
    if text.strip().lower() in ("unlimited", "inf", "none"):
        return None
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a rate: give MB/s (e.g. 400) or 'unlimited'") from None
    if not rate > 0 or rate == float("inf"):
        raise ValueError(f"{text!r} is not a rate: give MB/s above 0 (e.g. 400) or 'unlimited'")
    return rate


class Throttle:
    """A token bucket of ``rate`` MB/s over the write chunks, in GCRA form (a due time per chunk).

    The bucket starts empty, so the stream has no opening burst and bytes/elapsed from the first byte
    is the rate. When the writer falls behind its schedule because it was not scheduled in time (a
    busy machine), it catches up (up to ``CATCH_UP`` seconds' worth), so the rate holds over the
    epoch; when it waited on a full FIFO because the reader was behind, only ``SLACK`` of that wait
    is made up (``held_up``), as the agent would from its own buffers: a reader that stalls cannot
    turn its idle time into a burst. ``None`` is unlimited: no pacing at all.
    """

    def __init__(self, rate: float | None, fifo_size: int = CHUNK) -> None:
        self.rate = rate * MB if rate is not None else None
        # A paced chunk fits in half the FIFO: a bigger one would wait for the reader to wake up
        # even when it keeps up, and that wait would count as trainer-bound.
        paced = int(max(4096, min(CHUNK, fifo_size // 2, (self.rate or 0) * PACE)))
        self.chunk = CHUNK if self.rate is None else paced
        self.due: float | None = None

    def pace(self, size: int) -> float:
        """Wait until ``size`` more bytes may go; returns the seconds slept."""
        if self.rate is None:
            return 0.0
        now = time.monotonic()
        if self.due is None:
            self.due = now
        slept = 0.0
        if self.due > now:
            time.sleep(self.due - now)
            slept = time.monotonic() - now
        elif now - self.due > CATCH_UP:
            self.due = now - CATCH_UP
        self.due += size / self.rate
        return slept

    def held_up(self, seconds: float) -> None:
        """A write waited ``seconds`` on a full FIFO (the reader was behind): the platform keeps
        ``SLACK`` of that in hand, and the rest is lost, not sent later as a burst."""
        if self.due is not None and seconds > SLACK:
            self.due += seconds - SLACK


@dataclass
class EpochClock:
    """Where one epoch's time went, as the platform's writer sees it."""

    ready: float  # when the platform could start sending this epoch
    opened: float = 0.0
    first: float | None = None  # when the first byte was taken
    sent: int = 0
    blocked: float = 0.0  # the FIFO was full: data waited for the reader (trainer-bound)
    starved: float = 0.0  # held back by the rate while the FIFO stood empty (input-starved)


def objects(path: str) -> list[str]:
    """The objects of a channel: the file itself, or every file under the directory, sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise SystemExit(f"smsupervise-pipe-emulate: {path}: no such file or directory")
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found += [os.path.join(root, name) for name in sorted(files)]
    return found


def _open(path: str, gunzip: bool) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if gunzip else open(path, "rb")


def chunks(path: str, recordio: bool, gunzip: bool) -> Iterator[bytes]:
    """The bytes of one object as the platform streams them."""
    with _open(path, gunzip) as source:
        if recordio:
            data = source.read()
            yield struct.pack("<II", RECORDIO_MAGIC, len(data)) + data + b"\0" * (-len(data) % 4)
            return
        while chunk := source.read(CHUNK):
            yield chunk


def recordio_records(data: bytes) -> list[bytes]:
    """Split a RecordIO stream back into its records (for tests and readers)."""
    records, offset = [], 0
    while offset < len(data):
        magic, length = struct.unpack_from("<II", data, offset)
        if magic != RECORDIO_MAGIC:
            raise ValueError(f"bad RecordIO magic at offset {offset}")
        length &= (1 << 29) - 1
        records.append(data[offset + 8 : offset + 8 + length])
        offset += 8 + length + (-length % 4)
    return records


def _say(event: str, **fields: object) -> None:
    sys.stderr.buffer.write(orjson.dumps({"event": event, **fields}) + b"\n")
    sys.stderr.flush()


def _mkfifo(path: str) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkfifo(path, 0o660)


def _open_fifo(path: str) -> int:
    """Open our FIFO for writing (blocks until a reader opens it); never through a link, never
    into anything else that sits at the name (a regular file, a device)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as error:
        raise OSError(error.errno, f"{path}: {error.strerror} (a FIFO was expected here)") from None
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a FIFO: remove it, or give another --data-dir")
    return fd


@dataclass(frozen=True)
class StreamOptions:
    """How every channel is streamed."""

    epochs: int
    recordio: bool = False
    gunzip: bool = False
    rate: float | None = None  # MB/s per channel; None: as fast as the writer goes


def _queued(fd: int) -> int:
    """Bytes in the FIFO that the reader has not taken yet."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def _write(fd: int, view: memoryview, poller: select.poll, clock: EpochClock) -> None:
    """All of ``view`` into the non-blocking FIFO; time spent waiting on a full FIFO is counted."""
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            began = time.monotonic()
            poller.poll()  # POLLERR (the reader closed) wakes it too: the next write says EPIPE
            clock.blocked += time.monotonic() - began
            continue
        if clock.first is None:
            clock.first = time.monotonic()
        clock.sent += written
        view = view[written:]


def pieces(items: list[str], options: StreamOptions, size: int) -> Iterator[bytes]:
    """The epoch's bytes in pieces of ``size`` (the last may be shorter): small objects or records
    are joined, as the agent writes network buffers, not one record at a time."""
    pending: list[bytes] = []
    held = 0
    for item in items:
        for chunk in chunks(item, options.recordio, options.gunzip):
            pending.append(chunk)
            held += len(chunk)
            if held >= size:
                joined = b"".join(pending)
                cut = len(joined) - len(joined) % size
                yield from (joined[start : start + size] for start in range(0, cut, size))
                pending, held = [joined[cut:]], len(joined) - cut
    if held:
        yield b"".join(pending)


def _send(fd: int, items: list[str], options: StreamOptions, clock: EpochClock) -> None:
    throttle = Throttle(options.rate, fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    for piece in pieces(items, options, throttle.chunk):
        slept = throttle.pace(len(piece))
        if slept and _queued(fd) == 0:  # the reader took everything and waits for more
            clock.starved += slept
        blocked = clock.blocked
        _write(fd, memoryview(piece), poller, clock)
        throttle.held_up(clock.blocked - blocked)


def stream_channel(data_dir: str, channel: str, source: str, options: StreamOptions) -> None:
    """Stream one channel for every epoch, reporting an ``epoch_streamed`` line per epoch."""
    items = objects(source)
    _mkfifo(os.path.join(data_dir, f"{channel}_0"))
    ready = time.monotonic()
    for epoch in range(options.epochs):
        path = os.path.join(data_dir, f"{channel}_{epoch}")
        _mkfifo(path)
        clock = EpochClock(ready)
        fd = _open_fifo(path)
        clock.opened = time.monotonic()
        os.set_blocking(fd, False)
        if epoch + 1 < options.epochs:
            _mkfifo(os.path.join(data_dir, f"{channel}_{epoch + 1}"))  # the next one, in advance
        ended = "eof"
        try:
            _send(fd, items, options, clock)
        except BrokenPipeError:
            ended = "reader closed"
        finally:
            os.close(fd)
        ready = time.monotonic()
        _report(channel, epoch, clock, ended, options.rate)


def _report(channel: str, epoch: int, clock: EpochClock, ended: str, rate: float | None) -> None:
    done = time.monotonic()
    seconds = done - clock.opened
    streaming = done - clock.first if clock.first is not None else 0.0
    _say(
        "epoch_streamed",
        channel=channel,
        epoch=epoch,
        bytes=clock.sent,
        seconds=round(seconds, 6),
        mb_per_s=round(clock.sent / seconds / MB, 1) if seconds else None,
        ended=ended,
        rate_mb_per_s=rate,
        wait_open_s=round(clock.opened - clock.ready, 6),
        first_byte_s=round(clock.first - clock.ready, 6) if clock.first is not None else None,
        streaming_s=round(streaming, 6),
        blocked_s=round(clock.blocked, 6),
        starved_s=round(clock.starved, 6),
    )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="smsupervise-pipe-emulate",
        description="Play SageMaker's side of Pipe mode: stream local data into "
        "<data-dir>/<channel>_<N> FIFOs.",
    )
    parser.add_argument(
        "--data-dir", required=True, help="where the FIFOs go (SageMaker: /opt/ml/input/data)"
    )
    parser.add_argument(
        "--channel",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a channel and its data: a file, or a directory of objects (repeatable)",
    )
    parser.add_argument("--epochs", type=int, default=1, help="how many epochs to stream (default 1)")
    parser.add_argument("--recordio", action="store_true", help="wrap each object in a RecordIO record")
    parser.add_argument("--gunzip", action="store_true", help="decompress gzip objects while streaming")
    parser.add_argument(
        "--rate",
        default="unlimited",
        metavar="MB/S",
        help="each channel's throughput in MB/s, or 'unlimited' (default): the platform's speed",
    )
    args = parser.parse_args(argv)
    try:
        args.rate = parse_rate(args.rate)
    except ValueError as error:
        parser.error(f"--rate {error}")
    channels = []
    for item in args.channel:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--channel {item!r}: use NAME=PATH, e.g. --channel train=./data/train")
        if CHANNEL_NAME.fullmatch(name) is None:
            parser.error(
                f"--channel {item!r}: the channel name {name!r} does not match the API's ChannelName "
                f"rule [A-Za-z0-9.-_], 1 to 64 characters; use letters, digits, '.', '-' and '_'"
            )
        channels.append((name, path))
    args.channels = channels
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # Python ignores SIGPIPE: a reader's early close is EPIPE, which ends that epoch.
    try:
        os.makedirs(args.data_dir, exist_ok=True)
    except OSError as error:
        why = "not a directory" if isinstance(error, FileExistsError) else error.strerror
        sys.stderr.write(
            f"smsupervise-pipe-emulate: --data-dir {args.data_dir}: {why}; give a directory "
            "(it is made if missing), not a file or a path through one\n"
        )
        return 2
    for _, path in args.channels:
        objects(path)  # fail early on a missing path
    failures: list[BaseException] = []
    options = StreamOptions(args.epochs, args.recordio, args.gunzip, args.rate)

    def run(name: str, path: str) -> None:
        try:
            stream_channel(args.data_dir, name, path, options)
        except BaseException as error:
            failures.append(error)
            _say("channel_failed", channel=name, error=f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=run, args=channel, daemon=True) for channel in args.channels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 1 if failures else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
