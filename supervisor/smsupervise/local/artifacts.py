"""``model.tar.gz`` and ``output.tar.gz`` as the service makes them, fast.

The tar stream is written straight into a parallel gzip, with no intermediate copy or file:

* ``pigz`` when installed (file bytes go to it with ``sendfile``, never through Python);
* else a standard-library parallel gzip: the stream is cut into 4 MiB blocks, each compressed by
  ``zlib`` in a thread pool (zlib releases the GIL) into a complete gzip member; concatenated
  members are one valid gzip file (RFC 1952 section 2.2), read by ``gzip``, ``tar`` and Python.

Several roots (hosts) are merged into one archive: a path present on several hosts is taken from
the last host (the service asks users to avoid clashes). Entries are sorted; symlinks are kept as
symlinks (the SDK dereferences them; the service's choice is undocumented); gzip level 6.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

BLOCK = 4 << 20
Compressor = Literal["auto", "pigz", "threads"]


@dataclass(frozen=True, slots=True)
class Packed:
    """One archive written."""

    path: str
    files: int
    bytes_in: int
    bytes_out: int
    seconds: float
    compressor: str


def _gzip_member(data: bytes, level: int) -> bytes:
    packer = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
    return packer.compress(data) + packer.flush()


class _ThreadedGzip:
    """A write-only stream compressed as independent gzip members by a thread pool."""

    def __init__(self, target: io.BufferedWriter, level: int, threads: int) -> None:
        self._target, self._level = target, level
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gzip")
        self._pending: deque[Future[bytes]] = deque()
        self._limit = 2 * threads
        self._buffer = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        self._buffer += data
        while len(self._buffer) >= BLOCK:
            self._submit(bytes(self._buffer[:BLOCK]))
            del self._buffer[:BLOCK]

    def copy_file(self, fd: int, size: int) -> None:
        while size > 0:
            chunk = os.read(fd, min(BLOCK, size))
            if not chunk:
                raise OSError("a file shrank while it was being archived")
            self.write(chunk)
            size -= len(chunk)

    def _submit(self, block: bytes) -> None:
        self._pending.append(self._pool.submit(_gzip_member, block, self._level))
        while len(self._pending) > self._limit:
            self._target.write(self._pending.popleft().result())

    def close(self) -> None:
        if self._buffer:
            self._submit(bytes(self._buffer))
        while self._pending:
            self._target.write(self._pending.popleft().result())
        self._pool.shutdown()


class _Pigz:
    """A write-only stream into ``pigz`` (stdout to the target file)."""

    def __init__(self, target: io.BufferedWriter, level: int, threads: int) -> None:
        argv = ["pigz", f"-{level}", "-p", str(threads)]
        self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=target)
        assert self._process.stdin is not None
        self._stdin = self._process.stdin
        self._fd = self._stdin.fileno()

    def write(self, data: bytes | memoryview) -> None:
        self._stdin.write(data)

    def copy_file(self, fd: int, size: int) -> None:
        self._stdin.flush()
        offset = 0
        while offset < size:
            sent = os.sendfile(self._fd, fd, offset, size - offset)
            if sent == 0:
                raise OSError("a file shrank while it was being archived")
            offset += sent

    def close(self) -> None:
        self._stdin.close()
        if self._process.wait() != 0:
            raise OSError(f"pigz exited with {self._process.returncode}")


def members(roots: list[str]) -> dict[str, str]:
    """Archive name -> path, over all roots merged (the last root wins a clash), sorted."""
    merged: dict[str, str] = {}
    for root in roots:
        for parent, dirs, names in os.walk(root):
            dirs.sort()
            for name in [*dirs, *names]:
                path = os.path.join(parent, name)
                merged[os.path.relpath(path, root)] = path
    return dict(sorted(merged.items()))


def pack(roots: list[str], target: str, level: int = 6, compressor: Compressor = "auto") -> Packed:
    """Write the merged contents of ``roots`` as a gzipped tar at ``target`` (atomically)."""
    threads = len(os.sched_getaffinity(0))
    use = "pigz" if compressor == "pigz" or (compressor == "auto" and shutil.which("pigz")) else "threads"
    began, files, total = time.monotonic(), 0, 0
    infos = tarfile.TarFile(fileobj=io.BytesIO(), mode="w")  # only for gettarinfo (hard links)
    partial = f"{target}.part"
    with open(partial, "wb") as out:
        sink = _Pigz(out, level, threads) if use == "pigz" else _ThreadedGzip(out, level, threads)
        written = 0
        for name, path in members(roots).items():
            info = infos.gettarinfo(path, arcname=name)
            header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
            sink.write(header)
            written += len(header)
            if info.isreg():
                with open(path, "rb") as source:
                    sink.copy_file(source.fileno(), info.size)
                padding = -info.size % tarfile.BLOCKSIZE
                sink.write(b"\0" * padding)
                written += info.size + padding
                files, total = files + 1, total + info.size
        end = 2 * tarfile.BLOCKSIZE
        sink.write(b"\0" * (end + (-(written + end) % tarfile.RECORDSIZE)))
        sink.close()
    os.replace(partial, target)
    return Packed(target, files, total, os.path.getsize(target), time.monotonic() - began, use)
