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
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import os
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence

import orjson

RECORDIO_MAGIC = 0xCED7230A
CHUNK = 1 << 20


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


def stream_channel(  # noqa: PLR0917
    data_dir: str, channel: str, source: str, epochs: int, recordio: bool, gunzip: bool
) -> None:
    items = objects(source)
    _mkfifo(os.path.join(data_dir, f"{channel}_0"))
    for epoch in range(epochs):
        path = os.path.join(data_dir, f"{channel}_{epoch}")
        _mkfifo(path)
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # blocks until a reader opens it
        if epoch + 1 < epochs:
            _mkfifo(os.path.join(data_dir, f"{channel}_{epoch + 1}"))  # the next one, in advance
        began, sent, ended = time.monotonic(), 0, "eof"
        try:
            for item in items:
                for chunk in chunks(item, recordio, gunzip):
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        sent += written
                        view = view[written:]
        except BrokenPipeError:
            ended = "reader closed"
        finally:
            os.close(fd)
        seconds = time.monotonic() - began
        _say(
            "epoch_streamed",
            channel=channel,
            epoch=epoch,
            bytes=sent,
            seconds=round(seconds, 6),
            mb_per_s=round(sent / seconds / 1e6, 1) if seconds else None,
            ended=ended,
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
    args = parser.parse_args(argv)
    channels = []
    for item in args.channel:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--channel {item!r}: use NAME=PATH, e.g. --channel train=./data/train")
        channels.append((name, path))
    args.channels = channels
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # Python ignores SIGPIPE: a reader's early close is EPIPE, which ends that epoch.
    os.makedirs(args.data_dir, exist_ok=True)
    for _, path in args.channels:
        objects(path)  # fail early on a missing path
    failures: list[BaseException] = []

    def run(name: str, path: str) -> None:
        try:
            stream_channel(args.data_dir, name, path, args.epochs, args.recordio, args.gunzip)
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
