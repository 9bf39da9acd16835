"""The Pipe relay in-process: ``PipeRelay`` with its real threads over real FIFOs, real pipes.

Every assertion is on bytes, the order and fields of events, or a thread's kernel state
(``/proc/<tid>/wchan``); none on how fast anything went. Tests that involve an event loop run under
both the stdlib loop and uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import subprocess
import tempfile
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from smsupervise.linux.pipes import PIPE_SIZE, PipeLimits
from smsupervise.pipemode.channel import ChannelSpec
from smsupervise.pipemode.relay import PipeRelay
from tests.conftest import PYTHON, sleep_until

NO_LIMIT = PipeLimits(max_size=PIPE_SIZE, user_soft=0, exempt=True, in_use=0)
LOOPS = ["asyncio", "uvloop"]


class Relay:
    """A PipeRelay over real FIFOs, with its events collected (from its threads, in order)."""

    def __init__(self, tmp: Path, channels: list[str], ring: int = 8 << 20) -> None:
        self.up = tmp / "data"
        self.down = tmp / "relay"
        self.up.mkdir(exist_ok=True)
        self.events: list[tuple[str, dict[str, Any]]] = []
        specs = tuple(ChannelSpec(ch, str(self.up), str(self.down), ring) for ch in channels)
        self.relay = PipeRelay(specs, lambda event, fields: self.events.append((event, fields)), NO_LIMIT)

    def __enter__(self) -> Relay:
        self.relay.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.relay.stop()

    def epochs(self, channel: str) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == "pipe_epoch_done" and f["channel"] == channel]


def _produce(path: Path, data: bytes, rng: random.Random) -> threading.Thread:
    """A producer thread: create the FIFO, write ``data`` in random chunk sizes, close."""

    def run() -> None:
        os.mkfifo(path)
        fd = os.open(path, os.O_WRONLY)
        view = memoryview(data)
        while view:
            size = rng.choice([1, 7, 4096, 65536, 1 << 20, 3 << 20])
            view = view[os.write(fd, view[:size]) :]
        os.close(fd)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _consume(path: Path, chunk: int = 1 << 20, limit: int | None = None) -> bytes:
    """A reader like the AWS example: wait for the FIFO to exist, open it, read to EOF (or ``limit``)."""
    sleep_until(path.exists, timeout=30, what=f"{path} to appear")
    got = bytearray()
    with open(path, "rb", buffering=0) as handle:
        while limit is None or len(got) < limit:
            piece = handle.read(chunk)
            if not piece:
                break
            got += piece
    return bytes(got)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wchan(thread: threading.Thread) -> str:
    """Where in the kernel a thread of ours sleeps (e.g. ``pipe_write``, ``anon_pipe_write`` on 6.x)."""
    try:
        return Path(f"/proc/self/task/{thread.native_id}/wchan").read_text()
    except OSError:
        return ""


def _run_on(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    factory = uvloop.new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


@pytest.mark.parametrize(
    ("size", "seed"), [(0, 1), (1, 2), (65535, 3), ((1 << 20) + 7, 4), (37 * (1 << 20) + 3, 5)]
)
def test_bytes_arrive_exactly_whatever_the_size_and_chunking(tmp_path: Path, size: int, seed: int) -> None:
    """Any size, any producer chunking, any reader chunk: the child gets exactly the bytes sent."""
    rng = random.Random(seed)
    data = rng.randbytes(size)
    with Relay(tmp_path, ["train"]) as relay:
        producer = _produce(relay.up / "train_0", data, rng)
        got = _consume(relay.down / "train_0", chunk=rng.choice([1000, 65536, 1 << 20]))
        producer.join(10)
        sleep_until(lambda: relay.epochs("train"), what="the epoch event")
    assert _sha(got) == _sha(data)
    assert relay.epochs("train")[0]["bytes"] == size
    assert relay.epochs("train")[0]["ended"] == "eof"


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(0, 3 << 20),
    seed=st.integers(0, 2**32 - 1),
    ring=st.sampled_from([1 << 20, 2 << 20, 8 << 20]),
    chunk=st.sampled_from([1, 4096, 65536, 1 << 20]),
)
def test_any_stream_through_any_ring_arrives_exactly(size: int, seed: int, ring: int, chunk: int) -> None:
    """Random sizes, producer chunkings (seeded), ring sizes and reader chunks: byte-exact."""
    rng = random.Random(seed)
    data = rng.randbytes(size)
    with tempfile.TemporaryDirectory() as tmp, Relay(Path(tmp), ["train"], ring=ring) as relay:
        producer = _produce(relay.up / "train_0", data, rng)
        got = _consume(relay.down / "train_0", chunk=chunk)
        producer.join(10)
    assert _sha(got) == _sha(data)


def test_the_ring_reads_ahead_before_the_child_opens(tmp_path: Path) -> None:
    """The whole epoch fits the ring: the producer finishes before the child even opens, which only
    read-ahead allows (the platform's FIFO holds 1 MiB), and the event says it was trainer-bound."""
    data = random.Random(9).randbytes(12 << 20)
    with Relay(tmp_path, ["train"], ring=16 << 20) as relay:
        producer = _produce(relay.up / "train_0", data, random.Random(9))
        producer.join(30)
        assert not producer.is_alive()
        got = _consume(relay.down / "train_0")
        sleep_until(lambda: relay.epochs("train"), what="the epoch event")
    assert _sha(got) == _sha(data)
    stats = relay.epochs("train")[0]
    assert stats["ring_peak"] >= len(data) - PIPE_SIZE
    assert stats["ring_bytes"] <= 16 << 20
    assert stats["wait_open_s"] > 0
    assert stats["trainer_bound_s"] >= stats["wait_open_s"]


def test_a_full_ring_holds_the_producer_back(tmp_path: Path) -> None:
    """The negative twin: an epoch bigger than the ring cannot finish before the child opens; the
    producer sleeps in pipe_write, and the ring never held more than its size."""
    data = random.Random(8).randbytes(12 << 20)
    with Relay(tmp_path, ["train"], ring=2 << 20) as relay:
        producer = _produce(relay.up / "train_0", data, random.Random(8))
        sleep_until(lambda: "pipe_write" in _wchan(producer), what="the producer to block")
        got = _consume(relay.down / "train_0")
        producer.join(10)
        sleep_until(lambda: relay.epochs("train"), what="the epoch event")
    assert _sha(got) == _sha(data)
    assert relay.epochs("train")[0]["ring_peak"] <= 2 << 20


def test_a_producer_that_waits_on_the_child_is_reported_as_input_starved(tmp_path: Path) -> None:
    """The child has its FIFO open and reads every piece before the next is sent: every wait is on
    upstream, so the epoch is input-starved and never trainer-bound."""
    path = tmp_path / "data" / "train_0"
    read_one = threading.Semaphore(0)
    opened = threading.Event()
    with Relay(tmp_path, ["train"]) as relay:

        def trickle() -> None:
            os.mkfifo(path)
            opened.wait(30)
            fd = os.open(path, os.O_WRONLY)
            for _ in range(20):
                os.write(fd, b"x" * 1000)
                read_one.acquire(timeout=30)  # the child has it: send the next piece
            os.close(fd)

        producer = threading.Thread(target=trickle, daemon=True)
        producer.start()
        sleep_until((relay.down / "train_0").exists, what="our FIFO")
        got = bytearray()
        with open(relay.down / "train_0", "rb", buffering=0) as handle:
            opened.set()
            while piece := handle.read(1000):
                got += piece
                if len(got) % 1000 == 0:
                    read_one.release()
        producer.join(10)
        sleep_until(lambda: relay.epochs("train"), what="the epoch event")
    assert bytes(got) == b"x" * 20000
    stats = relay.epochs("train")[0]
    assert stats["input_starved_s"] > 0
    assert stats["trainer_bound_s"] == 0


def test_epochs_in_turn_and_an_early_close_ends_only_that_epoch(tmp_path: Path) -> None:
    """The child reads 1 MiB of epoch 0 and closes it; the producer sees EPIPE (its next epoch);
    epoch 1 then arrives whole."""
    rng = random.Random(3)
    first, second = rng.randbytes(20 << 20), rng.randbytes(3 << 20)
    with Relay(tmp_path, ["train"]) as relay:
        outcome: dict[str, str] = {}

        def produce() -> None:
            for epoch, data in enumerate((first, second)):
                path = relay.up / f"train_{epoch}"
                os.mkfifo(path)
                fd = os.open(path, os.O_WRONLY)
                try:
                    for start in range(0, len(data), 1 << 20):
                        os.write(fd, data[start : start + (1 << 20)])
                    outcome[str(epoch)] = "eof"
                except BrokenPipeError:
                    outcome[str(epoch)] = "reader closed"
                os.close(fd)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        head = _consume(relay.down / "train_0", limit=1 << 20)
        got = _consume(relay.down / "train_1")
        producer.join(10)
        sleep_until(lambda: len(relay.epochs("train")) == 2, what="two epoch events")
    assert head[: 1 << 20] == first[: 1 << 20]
    assert _sha(got) == _sha(second)
    assert [e["ended"] for e in relay.epochs("train")] == ["child closed", "eof"]
    assert outcome == {"0": "reader closed", "1": "eof"}


def test_an_early_close_is_noticed_while_the_producer_is_idle(tmp_path: Path) -> None:
    """The platform holds the FIFO open but sends nothing for now; the child closes its end: the
    epoch ends at once (not at the platform's next write), so the platform's next write gets EPIPE."""
    release = threading.Event()
    with Relay(tmp_path, ["train"]) as relay:
        path = relay.up / "train_0"

        def produce() -> None:
            os.mkfifo(path)
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, b"z" * 100)
            release.wait(30)
            with contextlib.suppress(BrokenPipeError):
                os.write(fd, b"late")
            os.close(fd)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        assert _consume(relay.down / "train_0", limit=100) == b"z" * 100
        sleep_until(lambda: relay.epochs("train"), timeout=10, what="the epoch to end")
        assert relay.epochs("train")[0]["ended"] == "child closed"
        release.set()
        producer.join(10)


def test_fifos_that_appear_after_the_start_on_several_channels(tmp_path: Path) -> None:
    """The platform creates each channel's FIFO only after the relay and the readers are waiting:
    every channel still arrives exactly."""
    rng = random.Random(5)
    payload = {ch: rng.randbytes(rng.randrange(1, 6 << 20)) for ch in ("train", "validation", "test")}
    with Relay(tmp_path, list(payload)) as relay:
        results: dict[str, bytes] = {}
        readers = [
            threading.Thread(target=lambda c=ch: results.__setitem__(c, _consume(relay.down / f"{c}_0")))
            for ch in payload
        ]
        for thread in readers:
            thread.start()
        producers = [_produce(relay.up / f"{ch}_0", data, random.Random(ch)) for ch, data in payload.items()]
        for thread in [*producers, *readers]:
            thread.join(30)
    assert {ch: _sha(data) for ch, data in results.items()} == {
        ch: _sha(data) for ch, data in payload.items()
    }


@pytest.mark.parametrize("loop", LOOPS)
def test_four_channels_at_once_and_a_slow_reader_holds_back_only_its_own(tmp_path: Path, loop: str) -> None:
    """Four channels stream at once; one reader stops after its first MiB until the other three are
    done: they finish without it (each channel has its own thread), every byte arrives exactly, and
    the events reach the event loop through call_soon_threadsafe, as in the supervisor."""
    names = ["train", "validation", "test", "slow"]
    payload = {ch: random.Random(ch).randbytes(24 << 20) for ch in names}
    others_done = threading.Event()
    results: dict[str, bytes] = {}

    def slow_reader() -> None:
        path = tmp_path / "relay" / "slow_0"
        sleep_until(path.exists, what=f"{path} to appear")
        with open(path, "rb", buffering=0) as handle:
            got = bytearray(handle.read(1 << 20))
            others_done.wait(60)  # the slow trainer: it does not read until the others are done
            while piece := handle.read(1 << 20):
                got += piece
        results["slow"] = bytes(got)

    async def main() -> None:
        running = asyncio.get_running_loop()
        done: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def emit(event: str, fields: dict[str, object]) -> None:
            if event == "pipe_epoch_done":
                running.call_soon_threadsafe(done.put_nowait, fields)

        specs = tuple(
            ChannelSpec(ch, str(tmp_path / "data"), str(tmp_path / "relay"), 4 << 20) for ch in names
        )
        (tmp_path / "data").mkdir()
        relay = PipeRelay(specs, emit, NO_LIMIT)
        relay.start()
        try:
            producers = [
                _produce(tmp_path / "data" / f"{ch}_0", payload[ch], random.Random(ch)) for ch in names
            ]
            slow = threading.Thread(target=slow_reader, daemon=True)
            slow.start()
            for ch in names[:3]:
                results[ch] = await asyncio.to_thread(_consume, tmp_path / "relay" / f"{ch}_0")
            finished = [(await asyncio.wait_for(done.get(), 30))["channel"] for _ in range(3)]
            assert sorted(finished) == sorted(names[:3])  # the slow channel's epoch is still going
            assert slow.is_alive()
            others_done.set()
            await asyncio.to_thread(slow.join, 60)
            assert (await asyncio.wait_for(done.get(), 30))["channel"] == "slow"
            for thread in producers:
                thread.join(10)
        finally:
            relay.stop()

    _run_on(loop, main)
    assert {ch: _sha(data) for ch, data in results.items()} == {
        ch: _sha(data) for ch, data in payload.items()
    }


def test_a_producer_that_dies_mid_epoch_gives_eof_and_an_event(tmp_path: Path) -> None:
    """The platform's writer is killed mid-stream: the child gets EOF after exactly what was sent,
    and the epoch event says how many bytes that was."""
    with Relay(tmp_path, ["train"]) as relay:
        path = relay.up / "train_0"
        os.mkfifo(path)
        dying = subprocess.Popen(
            [
                PYTHON,
                "-c",
                f"import os; fd = os.open({str(path)!r}, os.O_WRONLY); "
                "os.write(fd, b'y' * 123457); os.kill(os.getpid(), 9)",
            ]
        )
        got = _consume(relay.down / "train_0")
        assert dying.wait(10) == -9
        sleep_until(lambda: relay.epochs("train"), what="the epoch event")
    assert got == b"y" * 123457
    assert relay.epochs("train")[0]["bytes"] == 123457


def test_stop_ends_every_thread_and_removes_only_what_the_relay_made(tmp_path: Path) -> None:
    """No upstream FIFO at all, or one nobody writes to: after stop() the relay thread is gone, our FIFOs
    and the dir we made are gone, and the platform's FIFO is still there."""
    relay = Relay(tmp_path, ["never", "idle"])
    os.mkfifo(relay.up / "idle_0")
    relay.relay.start()
    assert (relay.down / "idle_0").exists()  # epoch 0 mirrored before the child starts
    relay.relay.stop()
    assert not relay.relay.thread.is_alive()
    assert not relay.down.exists()
    assert (relay.up / "idle_0").exists()
