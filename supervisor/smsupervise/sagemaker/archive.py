"""An untrusted tar archive, read safely: bounded, stoppable, and refusing what tarfile mis-reads.

tarfile believes its headers. Before the CVE-2025-8194 fix (3.9.24, 3.10.19, 3.11.14, 3.12.12,
3.13.6; this project supports >= 3.10, and 3.11.7 is common) a negative size makes it read the same
header again for ever while its member list grows; an extended header (PAX or GNU long name) that
claims gigabytes is read whole into memory, a bomb once decompressed; every extended header is one
more level of recursion (2000 in a row: RecursionError); a bad checksum after the first header is
taken for the end of the archive and the rest is dropped without a word; seeking past a member of a
compressed archive decompresses it in one call nobody can interrupt. So tarfile reads through
``_Guard``: every read is bounded (``MAX_HEADER`` while headers are read), a chain of extended
headers is cut at ``MAX_CHAIN``, forward seeks of a compressed stream are reads of ``CHUNK`` bytes,
and the stop is asked before each. ``scan`` then checks each header as it comes: a size that is
negative, a header that does not advance, a sparse member, and the member and byte limits (declared
sizes, before tarfile seeks past them); at the end, the block where tarfile stopped must be the end
of the archive (zeros) or of the file. Whatever the Python, these are refused here.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Callable, Iterator
from typing import IO, NamedTuple, cast

from smsupervise.errors import ConfigError

FIELD = "sagemaker_submit_directory"
CHUNK = 1 << 20
MAX_HEADER = 1 << 20  # the longest single header read (a PAX header, a GNU long name)
MAX_CHAIN = 32  # extended headers before one member; tarfile recurses once for each
REBUILD = "rebuild the source archive from a plain directory (tar czf sourcedir.tar.gz -C src .)"
_MAGIC = {b"\x1f\x8b": "gz", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}


class Limits(NamedTuple):
    """Against zip bombs: the most bytes written and members unpacked for one source."""

    max_bytes: int = 20 << 30
    max_members: int = 1_000_000


class Stopped(Exception):
    """A stop signal arrived while the source was being read or fetched; nothing was left behind."""


class Unreadable(ConfigError):
    """The source is no tar archive tarfile can read to its end (corrupt, truncated, not a tar)."""


class Job(NamedTuple):
    """What one read needs to say and check: the config file for errors, the limits, the stop."""

    where: str
    limits: Limits
    should_stop: Callable[[], bool]


def refuse(job: Job, name: str, problem: str) -> ConfigError:
    """The error for an archive member that is refused: the member, why, and how to fix it."""
    return ConfigError(job.where, FIELD, f"archive member {name!r} {problem}; nothing was unpacked", REBUILD)


def header_error(job: Job, offset: int, problem: str) -> ConfigError:
    """The error for a header that is refused before it names a member: where it is and why."""
    return ConfigError(
        job.where, FIELD, f"the archive's header at byte {offset} {problem}; nothing was unpacked", REBUILD
    )


def limit_error(job: Job, what: str) -> ConfigError:
    """The error for a source over ``--source-max-bytes`` or ``--source-max-members``."""
    option = "--source-max-bytes" if "bytes" in what else "--source-max-members"
    env = option.upper().replace("--", "SMSUPERVISE_").replace("-", "_")
    return ConfigError(
        job.where,
        FIELD,
        f"the source has more than {what}; nothing was unpacked",
        f"if the archive is really that big, raise {option} (or {env})",
    )


def bytes_error(job: Job) -> ConfigError:
    return limit_error(job, f"{job.limits.max_bytes} bytes (--source-max-bytes)")


class _Guard:
    """The tar stream as tarfile sees it (``read``, ``seek``, ``tell``): each call asks the stop;
    while headers are read (``counting``), reads are bounded in size and in number per member."""

    def __init__(self, stream: IO[bytes], compressed: bool, job: Job) -> None:
        self._stream = stream
        self._compressed = compressed
        self._job = job
        self.counting = True
        self.reads = 0  # reads since the scan last asked for a member
        self.last = (-1, b"")  # where the last read began, and what it got

    def _stop(self) -> None:
        if self.counting and self._job.should_stop():  # the unpack asks per member and chunk itself
            raise Stopped("while reading the archive")

    def read(self, size: int | None = -1) -> bytes:
        here = self._stream.tell()
        self._stop()
        if self.counting:
            if size is None or size < 0:
                raise header_error(
                    self._job, here, f"has a negative size ({size}), which tarfile reads as 'all'"
                )
            if size > MAX_HEADER:
                raise header_error(
                    self._job, here, f"claims {size} bytes, more than any header needs ({MAX_HEADER})"
                )
            self.reads += 1
            if self.reads > 2 * MAX_CHAIN + 2:
                raise header_error(self._job, here, f"ends a chain of more than {MAX_CHAIN} extended headers")
        elif size is None or size < 0 or size > 2 * CHUNK:
            raise header_error(self._job, here, f"asks for {size} bytes in one read")
        data = self._stream.read(size)
        self.last = (here, data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        here = self._stream.tell()
        target = offset + (here if whence == os.SEEK_CUR else 0)
        if whence not in (os.SEEK_SET, os.SEEK_CUR) or target < 0:
            raise header_error(self._job, here, "makes tarfile seek to an impossible place")
        self._stop()
        if not self._compressed or target <= here:
            return self._stream.seek(target)
        while here < target:  # a compressed stream: decompressed forward, a stop check per chunk
            self._stop()
            got = len(self._stream.read(min(CHUNK, target - here)))
            if not got:
                break
            here += got
        return here

    def tell(self) -> int:
        return self._stream.tell()


def _unreadable() -> tuple[type[BaseException], ...]:
    """What a broken archive or compressed stream raises from tarfile, gzip, bz2, lzma and zlib."""
    import zlib  # noqa: PLC0415 - imported by tarfile already

    found: list[type[BaseException]] = [tarfile.TarError, EOFError, OSError, ValueError, OverflowError]
    found += [RecursionError, zlib.error]
    with contextlib.suppress(ImportError):
        import lzma  # noqa: PLC0415

        found.append(lzma.LZMAError)
    return tuple(found)


def _decompressed(raw: IO[bytes]) -> tuple[IO[bytes], bool]:
    head = raw.read(6)
    raw.seek(0)
    kind = next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), "")
    if kind == "gz":
        import gzip  # noqa: PLC0415

        return cast("IO[bytes]", gzip.GzipFile(fileobj=raw, mode="rb")), True
    if kind == "bz2":
        import bz2  # noqa: PLC0415

        return bz2.BZ2File(raw), True
    if kind == "xz":
        import lzma  # noqa: PLC0415

        return lzma.LZMAFile(raw), True
    return raw, False


@contextlib.contextmanager
def _opened(path: str, job: Job) -> Iterator[tuple[tarfile.TarFile, _Guard]]:
    """The archive at ``path`` opened through a guard (its first header read); ``tarfile.ReadError``
    (or another of ``_unreadable``) when it is no tar archive."""
    with open(path, "rb") as raw:
        stream, compressed = _decompressed(raw)
        with stream:
            guard = _Guard(stream, compressed, job)
            with tarfile.open(fileobj=guard, mode="r:") as archive:  # type: ignore[call-overload]
                yield archive, guard


def is_archive(path: str, job: Job) -> bool:
    """Whether ``path`` is a tar archive (compressed or not), like ``tarfile.is_tarfile`` but
    reading at most its first header, through the guard."""
    try:
        with _opened(path, job):
            return True
    except _unreadable():
        return False


def _blocks(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _problem(info: tarfile.TarInfo, start: int, after: int) -> str:
    """What is wrong with a header tarfile just read at ``start`` and left the stream at ``after``."""
    if info.size < 0:
        return f"has a negative size ({info.size}): tarfile before the CVE-2025-8194 fix reads it for ever"
    if info.sparse is not None or info.type == tarfile.GNUTYPE_SPARSE:
        return "is a sparse file (a map of holes), which no source tree needs"
    carries = info.isreg() or info.type not in tarfile.SUPPORTED_TYPES
    if not start <= info.offset < info.offset_data or after != info.offset_data + (
        _blocks(info.size) if carries else 0
    ):
        return "has a header that does not advance through the archive"
    return ""


def scan(archive: tarfile.TarFile, guard: _Guard, job: Job) -> list[tarfile.TarInfo]:
    """Every member's header, each checked as it is read (``_problem``, the member limit, the
    declared bytes against the byte limit, before tarfile seeks past them); then the end."""
    infos: list[tarfile.TarInfo] = []
    declared, start = 0, 0
    while True:
        guard.reads = 0
        info = archive.next()
        if info is None:
            break
        problem = _problem(info, start, archive.offset)
        if problem:
            raise refuse(job, info.name, problem)
        infos.append(info)
        if len(infos) > job.limits.max_members:
            raise limit_error(job, f"{job.limits.max_members} members (--source-max-members)")
        declared += info.size if info.isreg() else 0
        if declared > job.limits.max_bytes:
            raise bytes_error(job)
        start = archive.offset
    where, data = guard.last
    if where != archive.offset or data.strip(b"\0"):
        raise header_error(
            job,
            archive.offset,
            "cannot be read (a bad checksum, a number tarfile cannot read, or a truncated block): "
            "tarfile would take it for the end and drop the rest without a word",
        )
    guard.counting = False
    return infos


@contextlib.contextmanager
def read(path: str, job: Job, source: str) -> Iterator[tuple[tarfile.TarFile, list[tarfile.TarInfo]]]:
    """The archive at ``path`` (``source`` names it in errors) and its checked headers; raises
    ``ConfigError`` (refused, unreadable, over a limit) or ``Stopped``."""
    try:
        with _opened(path, job) as (archive, guard):
            yield archive, scan(archive, guard, job)
    except _unreadable() as error:
        raise Unreadable(
            job.where,
            FIELD,
            f"{source} is not a readable tar archive: {error}",
            "point it at a .tar.gz of your source directory",
        ) from None
