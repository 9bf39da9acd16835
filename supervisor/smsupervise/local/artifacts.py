"""``model.tar.gz`` and ``output.tar.gz`` as the service makes them, fast.

The tar stream is written straight into a parallel gzip, with no intermediate copy or file: the
stream is cut into 4 MiB blocks, each coded by ``zlib`` in a thread pool (zlib releases the GIL)
into complete gzip members; concatenated members are one valid gzip file (RFC 1952 section 2.2),
read by ``gzip``, ``tar`` and Python. Each 256 KiB segment is coded the cheapest way that loses
(almost) nothing: stored when it does not shrink, Huffman-only when string matching gains nothing
(float weights), else deflate. Model dirs are mostly weights, where deflate spends its time for
nothing: this is what makes it several times faster than ``pigz -6`` on the same cores.

With OutputDataConfig.CompressionType NONE, ``place`` puts the same merged files uncompressed, one
by one, under a directory or an ``s3://`` prefix (``.../output/model/`` and ``.../output/data/``:
the prefix DescribeTrainingJob's ModelArtifacts then names, and the SDK's ``model_data`` reads).

Several roots (hosts) are merged into one archive: a path present on several hosts is taken from
the last host (the service asks users to avoid clashes). Entries are sorted; symlinks are kept as
symlinks (the SDK dereferences them; the service's choice is undocumented); gzip level 6.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from smsupervise.local import s3
from smsupervise.local.console import Console

BLOCK = 4 << 20  # a unit of work for one thread
SEGMENT = 256 << 10  # the unit of the coding choice
PROBE, PROBES = 4 << 10, 4
STORED, HUFFMAN, DEFLATE = "stored", "huffman", "deflate"


@dataclass(frozen=True, slots=True)
class Packed:
    """One archive written."""

    path: str
    files: int
    bytes_in: int
    bytes_out: int
    seconds: float
    coded: dict[str, int]  # input bytes per coding: stored, huffman, deflate


def _gzip_member(data: bytes | memoryview, level: int, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> bytes:
    packer = zlib.compressobj(level, zlib.DEFLATED, 31, 8, strategy)  # wbits 31: gzip header and trailer
    return packer.compress(data) + packer.flush()


def _coding(segment: memoryview) -> str:
    """How to code ``segment``, judged on four spread 4 KiB samples (about
    6 % of it): stored (level 0) when neither deflate nor Huffman coding saves 3 % (compressed or
    quantised weights, images, archives); Huffman coding only when string matching gains less than
    one point over it (float weights: the same size, three times faster); else full deflate."""
    step = max(len(segment) // PROBES, 1)
    sample = b"".join(segment[i : i + PROBE] for i in range(0, len(segment), step))
    matched = len(zlib.compress(sample, 1))
    huffman = len(_gzip_member(sample, 1, zlib.Z_HUFFMAN_ONLY))
    if min(matched, huffman) * 100 > len(sample) * 97:
        return STORED
    return HUFFMAN if (huffman - matched) * 100 < len(sample) else DEFLATE


def _member(data: memoryview, coding: str, level: int) -> bytes:
    if coding == STORED:
        return _gzip_member(data, 0)
    return _gzip_member(data, level, zlib.Z_HUFFMAN_ONLY if coding == HUFFMAN else zlib.Z_DEFAULT_STRATEGY)


def _gzip_block(data: bytes, level: int) -> tuple[bytes, list[str]]:
    """``data`` as gzip members, one per run of 256 KiB segments that code alike (see ``_coding``),
    and each segment's coding: deflate spends ~20 ns a byte on data that does not shrink, the other
    codings 2-8."""
    view, parts, start = memoryview(data), [], 0
    codings = [_coding(view[i : i + SEGMENT]) for i in range(0, len(data), SEGMENT)]
    for index in range(1, len(codings) + 1):
        if index == len(codings) or codings[index] != codings[start]:
            parts.append(_member(view[start * SEGMENT : index * SEGMENT], codings[start], level))
            start = index
    return b"".join(parts), codings


class _ThreadedGzip:
    """A write-only stream compressed as independent gzip members by a thread pool."""

    def __init__(self, target: io.BufferedWriter, level: int, threads: int) -> None:
        self._target, self._level = target, level
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gzip")
        self._pending: deque[tuple[int, Future[tuple[bytes, list[str]]]]] = deque()
        self.coded = dict.fromkeys((STORED, HUFFMAN, DEFLATE), 0)
        self._limit = 2 * threads
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        if not self._buffer and len(data) == BLOCK:  # a whole block read from a file: no copy
            self._submit(data)
            return
        self._buffer += data
        while len(self._buffer) >= BLOCK:
            self._submit(bytes(self._buffer[:BLOCK]))
            del self._buffer[:BLOCK]

    def copy_file(self, fd: int, size: int) -> None:
        while size > 0:  # reads end on block boundaries, so a big file's blocks go out uncopied
            chunk = os.read(fd, min(BLOCK - len(self._buffer), size))
            if not chunk:
                raise OSError("a file shrank while it was being archived")
            self.write(chunk)
            size -= len(chunk)

    def _submit(self, block: bytes) -> None:
        self._pending.append((len(block), self._pool.submit(_gzip_block, block, self._level)))
        while len(self._pending) > self._limit:
            self._drain()

    def _drain(self) -> None:
        size, future = self._pending.popleft()
        coded, codings = future.result()
        self._target.write(coded)
        for index, coding in enumerate(codings):  # the last segment may be short
            self.coded[coding] += min(SEGMENT, size - index * SEGMENT)

    def close(self) -> None:
        if self._buffer:
            self._submit(bytes(self._buffer))
        while self._pending:
            self._drain()
        self._pool.shutdown()


def members(roots: list[str]) -> dict[str, str]:
    """Archive name -> path, over all roots merged (the last root wins a clash), sorted."""
    merged: dict[str, str] = {}
    for root in roots:
        pending = [root] if os.path.isdir(root) else []
        while pending:  # not os.walk: it recurses (Python < 3.12), and a tree may be 1500 deep
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    merged[os.path.relpath(entry.path, root)] = entry.path
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
    return dict(sorted(merged.items()))


def pack(roots: list[str], target: str, level: int = 6) -> Packed:
    """Write the merged contents of ``roots`` as a gzipped tar at ``target`` (atomically)."""
    threads = len(os.sched_getaffinity(0))
    began, files, total = time.monotonic(), 0, 0
    infos = tarfile.TarFile(fileobj=io.BytesIO(), mode="w")  # only for gettarinfo (hard links)
    partial = f"{target}.part"
    with open(partial, "wb") as out:
        sink = _ThreadedGzip(out, level, threads)
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
    return Packed(target, files, total, os.path.getsize(target), time.monotonic() - began, sink.coded)


def place(roots: list[str], target: str, put: Callable[[str, str], None] | None = None) -> Packed:
    """The merged regular files of ``roots``, uncompressed, each at ``target/<name>``: copied into
    the directory ``target`` (each through a temporary name), or handed to ``put(path, uri)`` for a
    remote prefix. Symlinks are followed (S3 has none); directories are implied by the names."""
    began, files, total = time.monotonic(), 0, 0
    for name, path in members(roots).items():
        if not os.path.isfile(path):
            continue
        where = f"{target.rstrip('/')}/{name}"
        if put is not None:
            put(path, where)
        else:
            os.makedirs(os.path.dirname(where), exist_ok=True)
            shutil.copyfile(path, f"{where}.part")
            os.replace(f"{where}.part", where)
        files, total = files + 1, total + os.path.getsize(path)
    if put is None:
        os.makedirs(target, exist_ok=True)
    return Packed(target, files, total, total, time.monotonic() - began, {})


def uncompressed(
    output_path: str, job_name: str, trees: list[str], console: Console, give_back: Callable[[str], None]
) -> str:
    """CompressionType NONE: every host's model and output data, merged, placed uncompressed under
    ``<output_path>/<job_name>/output/model/`` and ``.../output/data/`` (a directory, ``file://``,
    or ``s3://``: one object per file), an ``uploaded`` event each; returns the model's prefix
    (ending in ``/``, as the SDK's ``model_data`` wants it)."""
    local = output_path[len("file://") :] if output_path.startswith("file://") else output_path
    remote = output_path.startswith("s3://")
    base = f"{(output_path if remote else local).rstrip('/')}/{job_name}/output"
    for leaf, parts in (("model", ("model",)), ("data", ("output", "data"))):
        target = f"{base}/{leaf}"
        placed = place([os.path.join(t, *parts) for t in trees], target, s3.upload if remote else None)
        if not remote:
            for parent, _dirs, names in os.walk(target):
                for name in [parent, *(os.path.join(parent, n) for n in names)]:
                    give_back(name)
        console.uploaded += placed.bytes_out
        console.event(
            "uploaded",
            f"{target}/: {placed.files} files, {placed.bytes_in} bytes, uncompressed, "
            f"in {placed.seconds:.2f} s",
            path=f"{target}/",
            files=placed.files,
            bytes_in=placed.bytes_in,
            bytes_out=placed.bytes_out,
            seconds=round(placed.seconds, 3),
            coded=placed.coded,
        )
    model = f"{base}/model/"
    return "file://" + model if output_path.startswith("file://") else model
