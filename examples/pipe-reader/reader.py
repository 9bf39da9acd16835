"""An example Pipe-mode reader: RecordIO records of float32 samples, decoded and summed, every epoch.

It reads each channel the way Pipe-mode training code does: for epoch N it waits for the FIFO
``$SM_CHANNEL_<NAME>_N``, opens it, and reads it to EOF (one thread per channel). Each record is
``<label: int32><features: float32 * n>``; decoding it (unpacking the floats and summing them) is
this reader's "work". Standard library only.

    python3 reader.py [--epochs N] [--sleep-per-record S [--batch RECORDS]] [--stop-after RECORDS]
                      [--raw] [--digest FILE]

``--epochs`` defaults to the ``epochs`` hyperparameter (``SM_HP_EPOCHS``); the channels are those in
``SM_CHANNELS``. ``--sleep-per-record`` plays a training step per record (a slow trainer), taken
once per ``--batch`` records (a bursty one: a batch is read, then the step runs);
``--stop-after`` closes each epoch early; ``--raw`` reads bytes without decoding; ``--digest`` appends
a JSON line: each channel's epochs as read (bytes, SHA-256, seconds from the first byte to EOF).
"""

from __future__ import annotations

import argparse
import array
import hashlib
import json
import os
import struct
import threading
import time

MAGIC = 0xCED7230A


def wait_for(path: str) -> None:
    """Poll for the epoch's FIFO, as PipeModeDataset and the AWS examples do."""
    while not os.path.exists(path):
        time.sleep(0.005)


def records(stream, digest):  # type: ignore[no-untyped-def]
    """The RecordIO records of a stream: 8-byte header (magic, length), payload, padding to 4."""
    while header := stream.read(8):
        if len(header) < 8:
            raise ValueError("the stream ends inside a RecordIO header")
        magic, length = struct.unpack("<II", header)
        if magic != MAGIC:
            raise ValueError(f"bad RecordIO magic {magic:#x}: is the channel RecordIO (--recordio)?")
        length &= (1 << 29) - 1
        body = stream.read(length + (-length % 4))
        digest.update(header + body)
        yield body[:length]


def decode(payload: bytes) -> float:
    """The reader's work on one record: unpack the features and sum them."""
    features = array.array("f")
    features.frombytes(payload[4 : 4 + (len(payload) - 4) // 4 * 4])
    return sum(features)


def read_epoch(path: str, args: argparse.Namespace) -> dict[str, object]:
    """One epoch: records, bytes as streamed, their SHA-256, and seconds from first byte to EOF."""
    digest, count, size, first = hashlib.sha256(), 0, 0, None
    with open(path, "rb", buffering=1 << 20) as stream:
        if args.raw:
            while chunk := stream.read1(1 << 20):
                first = time.monotonic() if first is None else first
                digest.update(chunk)
                size += len(chunk)
        else:
            for payload in records(stream, digest):
                first = time.monotonic() if first is None else first
                decode(payload)
                count += 1
                size += 8 + len(payload) + (-len(payload) % 4)
                if args.sleep_per_record and count % args.batch == 0:
                    time.sleep(args.sleep_per_record * args.batch)  # a training step per batch
                if args.stop_after and count >= args.stop_after:
                    break  # closing the FIFO now ends the epoch early
    seconds = time.monotonic() - first if first is not None else 0.0
    return {"records": count, "bytes": size, "sha256": digest.hexdigest(), "seconds": seconds}


def read_channel(name: str, args: argparse.Namespace, digests: dict[str, object]) -> None:
    prefix = os.environ[f"SM_CHANNEL_{name.upper()}"]
    for epoch in range(args.epochs):
        path = f"{prefix}_{epoch}"
        wait_for(path)
        got = read_epoch(path, args)
        digests[f"{name}_{epoch}"] = got
        print(f"{name} epoch {epoch}: {got['records']} records, {got['bytes']} bytes", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("SM_HP_EPOCHS", "1")))
    parser.add_argument("--sleep-per-record", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--batch", type=int, default=1, metavar="RECORDS")
    parser.add_argument("--stop-after", type=int, default=0, metavar="RECORDS")
    parser.add_argument("--raw", action="store_true")
    parser.add_argument("--digest", metavar="FILE")
    args = parser.parse_args()
    digests: dict[str, object] = {}
    failures: list[BaseException] = []

    def run(name: str) -> None:
        try:
            read_channel(name, args, digests)
        except BaseException as error:
            failures.append(error)
            raise

    threads = [threading.Thread(target=run, args=(name,)) for name in json.loads(os.environ["SM_CHANNELS"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if args.digest:
        with open(args.digest, "a") as handle:
            handle.write(json.dumps(digests) + "\n")
    if failures:
        raise SystemExit(f"reader failed: {failures[0]}")


if __name__ == "__main__":
    main()
