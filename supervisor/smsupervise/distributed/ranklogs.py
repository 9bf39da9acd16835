"""Rank-aware logs: torchrun's per-rank files, read without blocking the loop, as JSON records that
carry ``rank``, ``local_rank`` and ``host``.

smsupervise sets ``PET_LOG_DIR`` and ``PET_REDIRECTS=3`` for torchrun (it reads every option from
``PET_<OPTION>``, so its argv stays the toolkit's): each rank writes
``<dir>/<run_id>_<random>/attempt_<n>/<local_rank>/{stdout,stderr}.log``. Regular files cannot be
polled for readiness, so they are read with ``aiofiles`` (a thread does the read; the loop never
waits on the disk) and looked at again every ``POLL`` seconds when there is nothing new. Each file
has its own framer, so records of different ranks never share a line. ``--ranks`` limits which ranks
reach the console; every rank's stderr tail is kept for the failure reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from typing import NamedTuple

import aiofiles
import aiofiles.os

from smsupervise.streams.framing import RecordFormat, SeqCounter, StreamFramer
from smsupervise.streams.writer import Output

POLL = 0.05  # seconds between looks at a file with nothing new (no inotify in the standard library)
CHUNK = 65536
TAIL_BYTES = 4096  # per rank


class RankFile(NamedTuple):
    """One stream of one rank."""

    path: str
    stream: str  # stdout or stderr
    local_rank: int
    rank: int


class RankLogs:
    """Reads one host's rank files from the moment torchrun creates them until ``stop()``."""

    def __init__(  # noqa: PLR0917 - where the records go and what they carry
        self,
        root: str,
        node_rank: int,
        per_host: int,
        fmt: RecordFormat,
        outputs: dict[int, Output],
        counter: SeqCounter,
        console: frozenset[int] | None,
    ) -> None:
        self.root = root
        self.node_rank = node_rank
        self.per_host = per_host
        self.fmt = fmt
        self.outputs = outputs
        self.counter = counter
        self.console = console
        self.tails: dict[int, deque[bytes]] = {}
        self.seen: set[str] = set()
        self.stderr_paths: dict[int, str] = {}  # rank -> its stderr file
        self.readers: list[asyncio.Task[None]] = []
        self.watcher: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()

    def start(self) -> None:
        self.watcher = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        """The ranks are gone: read every file to its end, flush, and stop."""
        self.stopping.set()
        if self.watcher is not None:
            await self._discover()  # files created just before the end
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watcher
        await asyncio.gather(*self.readers, return_exceptions=True)

    async def final_tail(self, rank: int) -> bytes:
        """The last stderr bytes of ``rank``, which has exited: read from its file's end now (the
        reader may not have got there yet)."""
        if rank not in self.stderr_paths:
            await self._discover()
        path = self.stderr_paths.get(rank)
        if path is None:
            return self.tail(rank)
        try:
            async with aiofiles.open(path, "rb") as handle:
                size = (await aiofiles.os.stat(path)).st_size
                await handle.seek(max(0, size - TAIL_BYTES))
                return bytes(await handle.read(TAIL_BYTES))
        except OSError:
            return self.tail(rank)

    def tail(self, rank: int) -> bytes:
        """The last stderr bytes of ``rank`` on this host."""
        return b"".join(self.tails.get(rank, ()))[-TAIL_BYTES:]

    async def _watch(self) -> None:
        while True:
            await self._discover()
            await asyncio.sleep(POLL)

    async def _discover(self) -> None:
        for found in await self._files():
            if found.path not in self.seen:
                self.seen.add(found.path)
                if found.stream == "stderr":
                    self.stderr_paths[found.rank] = found.path
                self.readers.append(asyncio.ensure_future(self._read(found)))

    async def _files(self) -> list[RankFile]:
        found: list[RankFile] = []
        with contextlib.suppress(OSError):
            for run in await aiofiles.os.listdir(self.root):
                run_dir = os.path.join(self.root, run)
                for attempt in await aiofiles.os.listdir(run_dir):
                    attempt_dir = os.path.join(run_dir, attempt)
                    for local in await aiofiles.os.listdir(attempt_dir):
                        if local.isdigit():
                            found += self._streams(os.path.join(attempt_dir, local), int(local))
        return found

    def _streams(self, directory: str, local_rank: int) -> list[RankFile]:
        rank = self.node_rank * self.per_host + local_rank
        return [
            RankFile(os.path.join(directory, f"{name}.log"), name, local_rank, rank)
            for name in ("stdout", "stderr")
            if os.path.exists(os.path.join(directory, f"{name}.log"))
        ]

    async def _read(self, found: RankFile) -> None:
        fmt = self.fmt._replace(extra={"rank": found.rank, "local_rank": found.local_rank})
        framer = StreamFramer(found.stream, fmt, self.counter)
        output = self.outputs[1 if found.stream == "stdout" else 2]
        shown = self.console is None or found.rank in self.console
        tail = self.tails.setdefault(found.rank, deque(maxlen=64)) if found.stream == "stderr" else None
        async with aiofiles.open(found.path, "rb") as handle:
            while True:
                data = await handle.read(CHUNK)
                if data:
                    if tail is not None:
                        tail.append(data)
                    records = framer.feed(data, time.time())
                    if shown:
                        output.write(records)
                        await _drained(output)
                elif self.stopping.is_set():
                    break
                else:
                    await asyncio.sleep(POLL)
        rest = framer.flush(time.time())
        if shown:
            output.write(rest)


async def _drained(output: Output) -> None:
    """Backpressure, as for the child's pipes: stop reading while our own output is congested."""
    if output.congested:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        output.when_drained(wake)
        await done
