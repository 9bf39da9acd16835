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
import select
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsupervise.core.signals import thread_wake
from smsupervise.linux.pipes import PIPE_SIZE, PipeLimits
from smsupervise.pipemode.channel import ChannelRelay, ChannelSpec
from smsupervise.pipemode.meter import EpochStats, RelayEvent
from smsupervise.pipemode.pump import SplicePump
from smsupervise.pipemode.relay import PipeRelay
from smsupervise.pipemode.ring import Ring
from tests.conftest import PYTHON, sleep_until

NO_LIMIT = PipeLimits(max_size=PIPE_SIZE, user_soft=0, exempt=True, in_use=0)


def _named(event: RelayEvent) -> tuple[str, dict[str, Any]]:
    """A typed relay event as the event log names it."""
    name = "pipe_epoch_done" if isinstance(event, EpochStats) else "pipe_relay_failed"
    return name, event._asdict()


class Relay:
    """A PipeRelay over real FIFOs, with its events collected (from its threads, in order)."""

    def __init__(
        self,
        tmp: Path,
        channels: list[str],
        ring: int = 8 << 20,
        limits: PipeLimits = NO_LIMIT,
        wake: int | None = None,
    ) -> None:
        self.up = tmp / "data"
        self.down = tmp / "relay"
        self.up.mkdir(exist_ok=True)
        self.events: list[tuple[str, dict[str, Any]]] = []  # (event name, fields) as the log has them
        specs = tuple(ChannelSpec(ch, str(self.up), str(self.down), ring) for ch in channels)
        self.relay = PipeRelay(
            specs,
            lambda event: self.events.append(_named(event)),
            limits,
            wake=thread_wake() if wake is None else wake,
        )

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


def _status_field(name: str) -> str:
    """A field of /proc/self/status (the kernel's view of this process's signal dispositions)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split()[1]
    raise AssertionError(f"no {name} in /proc/self/status")


def _open_files() -> list[str]:
    """What this process's fds point at (the listing's own fd is gone by the time it is read)."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return links


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
        sleep_until(lambda: relay.epochs("train"), what="the epoch event")
    assert _sha(got) == _sha(data)
    stats = relay.epochs("train")[0]
    assert min(stats["seconds"], stats["input_starved_s"], stats["trainer_bound_s"]) >= 0
    assert stats["input_starved_s"] + stats["trainer_bound_s"] == pytest.approx(stats["seconds"], abs=1e-5)


def test_a_first_byte_stamped_after_the_turns_clock_is_not_in_the_future() -> None:
    """The feeder stamps ``first`` with its own clock, which may be read after the relay thread's
    reading for the turn: the accounting takes it as ``now`` (no negative seconds, no time counted
    twice); the twin of the clamp is the arithmetic below without it (-0.0001 s, then 0.5 s)."""
    pump = SplicePump.__new__(SplicePump)  # the accounting alone: no fds, no thread
    pump.first, pump.seen, pump.fed, pump.full = 1.0002, 0.5, True, False
    pump.starved = pump.bound = pump.wait_open = 0.0
    pump.account(1.0001)
    assert (pump.first, pump.seen, pump.starved) == (1.0001, 1.0001, 0.0)
    pump.account(1.5)
    assert pump.starved == pytest.approx(0.4999)


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
    late: list[str] = []
    with Relay(tmp_path, ["train"]) as relay:
        path = relay.up / "train_0"

        def produce() -> None:
            os.mkfifo(path)
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, b"z" * 100)
            release.wait(30)
            try:
                os.write(fd, b"late")
                late.append("written")
            except BrokenPipeError:
                late.append("EPIPE")
            os.close(fd)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        assert _consume(relay.down / "train_0", limit=100) == b"z" * 100
        sleep_until(lambda: relay.epochs("train"), timeout=10, what="the epoch to end")
        assert relay.epochs("train")[0]["ended"] == "child closed"
        release.set()
        producer.join(10)
    assert late == ["EPIPE"]  # the relay had closed the platform's FIFO


class _Idle:
    """The platform sends ``data`` into ``train_0`` in two halves, the second once the child has the
    first (so it finds the child's FIFO open and the ring empty: the direct path) or once the child
    has EOF (a channel that failed before the child had half), holds the FIFO open until ``release``,
    then writes once more (``late``: whether the first write after the halves, or that one, got
    EPIPE). The child reads to EOF."""

    def __init__(self, relay: Relay, data: bytes) -> None:
        self.data = data
        self.path = relay.up / "train_0"
        self.release = threading.Event()
        self.half = threading.Event()
        self.late: list[str] = []
        self.got = bytearray()
        self.producer = threading.Thread(target=self._produce, daemon=True)
        self.child = threading.Thread(target=self._consume, args=(relay.down / "train_0",), daemon=True)
        self.producer.start()
        self.child.start()

    def _produce(self) -> None:
        os.mkfifo(self.path)
        fd = os.open(self.path, os.O_WRONLY)
        half = len(self.data) // 2
        os.write(fd, self.data[:half])
        self.half.wait(60)  # the child has half, or EOF: no assert in a thread (the test checks `got`)
        try:
            os.write(fd, self.data[half:])
            self.release.wait(60)
            os.write(fd, b"late")
            self.late.append("written")
        except BrokenPipeError:
            self.late.append("EPIPE")
        os.close(fd)

    def _consume(self, path: Path) -> None:
        sleep_until(path.exists, what=f"{path} to appear")
        with open(path, "rb", buffering=0) as handle:
            while piece := handle.read(1 << 20):
                self.got += piece
                if len(self.got) >= len(self.data) // 2:
                    self.half.set()
        self.half.set()  # EOF: there will be no more (the channel may have failed before half)


def _asleep_in_its_splice(relay: Relay, data: bytes) -> tuple[_Idle, threading.Thread]:
    """The child has every byte the platform sent, the platform holds its FIFO open: the
    channel's feeder sleeps in its splice, waiting on the platform's FIFO."""
    idle = _Idle(relay, data)
    feeder = relay.relay.relays[0].feeder
    sleep_until(lambda: len(idle.got) == len(data), what="every byte at the child")
    sleep_until(
        lambda: feeder.why is None and _wchan(feeder.thread) == "pipe_wait_readable",
        what="the feeder asleep on the platform's FIFO",
    )
    return idle, feeder.thread


def test_a_stop_wakes_a_feeder_asleep_on_an_idle_producer(tmp_path: Path) -> None:
    """The relay stops while the feeder sleeps in a splice on the platform's idle FIFO: the signal
    wakes it, every thread of the relay ends, the child gets EOF, and the platform's next write
    gets EPIPE (its FIFO was closed)."""
    data = random.Random(8).randbytes(300_000)
    relay = Relay(tmp_path, ["train"])
    with relay:
        idle, feeder = _asleep_in_its_splice(relay, data)
    assert not relay.relay.thread.is_alive()
    assert not feeder.is_alive()
    idle.child.join(30)
    assert bytes(idle.got) == data  # and EOF: the reader returned
    idle.release.set()
    idle.producer.join(30)
    assert idle.late == ["EPIPE"]
    assert relay.epochs("train")[0]["ended"] == "stopped"


def test_without_the_signal_a_feeder_asleep_in_its_splice_cannot_be_recalled(tmp_path: Path) -> None:
    """The negative twin: with a wake-up signal that nothing catches (SIGURG, ignored by default),
    the recall cannot reach the feeder: after the stop it still sleeps in its splice, holding the
    platform's FIFO open, so the platform's next write is taken, and delivered when it wakes."""
    caught = int(_status_field("SigCgt"), 16)
    assert not caught & (1 << (signal.SIGURG - 1))  # no handler at all (readline catches SIGWINCH)
    data = random.Random(9).randbytes(100_000)
    relay = Relay(tmp_path, ["train"], wake=signal.SIGURG)
    with relay:
        idle, feeder = _asleep_in_its_splice(relay, data)
    assert not relay.relay.thread.is_alive()
    assert feeder.is_alive()
    assert _wchan(feeder) == "pipe_wait_readable"
    idle.release.set()
    idle.producer.join(30)
    assert idle.late == ["written"]
    idle.child.join(30)  # the feeder woke with the late bytes, moved them, and closed the fds
    assert bytes(idle.got) == data + b"late"
    feeder.join(30)
    assert not feeder.is_alive()


class _Unstartable(threading.Thread):
    """A thread the kernel refuses, as when a container's pids limit is used up."""

    def start(self) -> None:
        raise RuntimeError("can't start new thread")


def test_a_feeder_that_cannot_start_fails_only_its_channel_and_the_child_gets_eof(tmp_path: Path) -> None:
    """No thread can be started for one channel's feeder: that channel fails at its first hand-over
    (``pipe_relay_failed`` names the error), its child gets EOF after the bytes the ring held, the
    platform's next write gets EPIPE, no fd is left open; the other channel arrives whole. The twin
    is that other channel, whose feeder started."""
    before = set(os.listdir("/proc/self/fd"))
    data = random.Random(12).randbytes(3 << 20)
    relay = Relay(tmp_path, ["train", "test"])
    broken = relay.relay.relays[0].feeder
    broken.thread = _Unstartable(target=lambda: None, daemon=True)
    idle = _Idle(relay, data)  # train: half, then the rest once the child has it (a hand-over)
    with relay:
        other = _produce(relay.up / "test_0", data, random.Random(13))
        assert _consume(relay.down / "test_0") == data
        other.join(10)
        idle.child.join(30)
        assert not idle.child.is_alive(), "the child did not get EOF"
        sleep_until(lambda: any(e == "pipe_relay_failed" for e, _ in relay.events), what="the failure")
        idle.release.set()
        idle.producer.join(30)
    failed = [f for e, f in relay.events if e == "pipe_relay_failed"]
    assert [(f["channel"], f["error"]) for f in failed] == [("train", "RuntimeError: can't start new thread")]
    assert bytes(idle.got) == data[: len(idle.got)]  # a prefix, then EOF
    assert idle.late == ["EPIPE"]
    assert set(os.listdir("/proc/self/fd")) <= before
    assert relay.epochs("test")[0]["ended"] == "eof"


STOP_MODES = ["flowing", "idle producer", "ring filling", "pauses"]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("mode", STOP_MODES)
def test_a_stop_at_any_moment_leaves_nothing_behind(tmp_path: Path, mode: str, seed: int) -> None:
    """Stop while bytes flow (fed or through the ring), while the producer is idle, while the ring
    fills, or amid pauses, a random moment after every child has bytes: stop() returns with every
    relay and feeder thread ended, every child gets EOF after exactly the bytes its epoch event
    counts, every producer's next write gets EPIPE, and no fd of ours into the run's dirs is open.
    (Distilled from a hostile probe's 460 runs.)"""
    rng = random.Random(seed * 31 + STOP_MODES.index(mode))
    names = [f"c{i}" for i in range(rng.choice([1, 2, 4]))]
    relay = Relay(tmp_path, names, ring=rng.choice([1 << 20, 4 << 20]))
    stopped, halted = threading.Event(), threading.Event()
    started = {ch: threading.Event() for ch in names}
    late: dict[str, str] = {}
    got: dict[str, int] = {}

    def produce(ch: str, prng: random.Random) -> None:
        os.mkfifo(relay.up / f"{ch}_0")
        fd = os.open(relay.up / f"{ch}_0", os.O_WRONLY)
        try:
            if mode == "idle producer":
                os.write(fd, prng.randbytes(prng.choice([1, 70_000, 1 << 20])))
                assert stopped.wait(30)
            while True:  # after the stop, the next write must fail
                os.write(fd, prng.randbytes(prng.choice([4096, 1 << 20])))
                if mode == "pauses" and prng.random() < 0.3:
                    halted.wait(prng.choice([0.001, 0.02]))  # a pause, cut short by the stop
            late[ch] = "written"  # never reached: the loop ends by EPIPE
        except BrokenPipeError:
            late[ch] = "EPIPE"
        finally:
            os.close(fd)

    def consume(ch: str, crng: random.Random) -> None:
        path = relay.down / f"{ch}_0"
        sleep_until(path.exists, what=str(path))
        total = 0
        with open(path, "rb", buffering=0) as handle:
            while piece := handle.read(crng.choice([4096, 1 << 20])):
                total += len(piece)
                started[ch].set()
                if mode == "ring filling" and total >= 1 << 20:
                    assert stopped.wait(30)  # stop reading: the ring fills until the stop
                elif mode == "pauses" and crng.random() < 0.3:
                    halted.wait(crng.choice([0.001, 0.02]))
        got[ch] = total

    threads = [
        threading.Thread(target=target, args=(ch, random.Random(rng.random())), daemon=True)
        for ch in names
        for target in (produce, consume)
    ]
    relay.relay.start()
    for thread in threads:
        thread.start()
    for ch in names:
        assert started[ch].wait(30), f"{ch} never started"
    halted.wait(rng.choice([0.0, 0.003, 0.011, 0.05]))  # the moment of the stop, not a wait for anything
    relay.relay.stop()
    stopped.set()
    halted.set()
    assert not relay.relay.thread.is_alive()
    assert not any(channel.feeder.thread.is_alive() for channel in relay.relay.relays)
    for thread in threads:
        thread.join(30)
    assert late == dict.fromkeys(names, "EPIPE")
    assert {ch: relay.epochs(ch)[0]["bytes"] for ch in names} == got
    assert [f["ended"] for ch in names for f in relay.epochs(ch)] == ["stopped"] * len(names)
    assert not [link for link in _open_files() if link.startswith(str(tmp_path))]


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


@pytest.mark.asyncio
async def test_four_channels_at_once_and_a_slow_reader_holds_back_only_its_own(tmp_path: Path) -> None:
    """Four channels stream at once; one reader stops after its first MiB until the other three are
    done: they finish without it, every byte arrives exactly, the slow channel's epoch charges the
    time it was held back to the trainer (it was not looked at while it waited: the time is charged
    when it is), and the events reach the event loop through call_soon_threadsafe, as in the
    supervisor."""
    names = ["train", "validation", "test", "slow"]
    payload = {ch: random.Random(ch).randbytes(24 << 20) for ch in names}
    others_done = threading.Event()
    results: dict[str, bytes] = {}
    held: list[float] = []  # when the slow reader stopped reading, and when it went on
    hold = 0.5  # seconds
    slow_epoch: list[dict[str, Any]] = []

    def slow_reader() -> None:
        path = tmp_path / "relay" / "slow_0"
        sleep_until(path.exists, what=f"{path} to appear")
        with open(path, "rb", buffering=0) as handle:
            got = bytearray(handle.read(1 << 20))
            held.append(time.monotonic())
            others_done.wait(60)  # the slow trainer: it does not read until the others are done
            # and holds back for at least ``hold`` in all: long beside a loaded machine's scheduling delays
            threading.Event().wait(max(0.0, held[0] + hold - time.monotonic()))
            held.append(time.monotonic())
            while piece := handle.read(1 << 20):
                got += piece
        results["slow"] = bytes(got)

    async def main() -> None:
        running = asyncio.get_running_loop()
        done: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def emit(event: RelayEvent) -> None:
            if isinstance(event, EpochStats):
                running.call_soon_threadsafe(done.put_nowait, event._asdict())

        specs = tuple(
            ChannelSpec(ch, str(tmp_path / "data"), str(tmp_path / "relay"), 4 << 20) for ch in names
        )
        (tmp_path / "data").mkdir()
        relay = PipeRelay(specs, emit, NO_LIMIT, wake=thread_wake())
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
            slow_epoch.append(await asyncio.wait_for(done.get(), 30))
            assert slow_epoch[0]["channel"] == "slow"
            for thread in producers:
                thread.join(10)
        finally:
            relay.stop()

    await main()
    assert {ch: _sha(data) for ch, data in results.items()} == {
        ch: _sha(data) for ch, data in payload.items()
    }
    stopped = held[1] - held[0]
    assert slow_epoch[0]["trainer_bound_s"] >= stopped / 2  # the relay filled its FIFO at once
    assert slow_epoch[0]["input_starved_s"] < stopped / 2  # the twin: not charged to the producer


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


class _Paced:
    """One channel's producer and consumer in lock-step bursts: the producer sends a burst, then
    waits (on a condition, no poll, no sleep) until the consumer has read every byte sent so far,
    so before each burst the relay has found upstream empty and waits for an edge."""

    def __init__(self, up: Path, down: Path, seed: int, bursts: int = 40) -> None:
        rng = random.Random(seed)
        self.sizes = [rng.choice([1, 4095, 4097, 65536, 300_000, 1 << 20]) for _ in range(bursts)]
        self.data = rng.randbytes(sum(self.sizes))
        self.up, self.down = up, down
        self.got = bytearray()
        self.eof = False
        self.lag = ""  # what the producer waited for in vain, if it did
        self.cond = threading.Condition()
        self.threads = [threading.Thread(target=t, daemon=True) for t in (self._produce, self._consume)]
        for thread in self.threads:
            thread.start()

    def _produce(self) -> None:
        os.mkfifo(self.up)
        fd = os.open(self.up, os.O_WRONLY)
        sent = 0
        for size in self.sizes:
            view = memoryview(self.data)[sent : sent + size]
            while view:
                view = view[os.write(fd, view) :]
            sent += size
            with self.cond:
                if not self.cond.wait_for(lambda sent=sent: len(self.got) >= sent, timeout=30):  # type: ignore[misc]
                    self.lag = f"{len(self.got)} of {sent} bytes after 30 s"
                    break
        os.close(fd)

    def _consume(self) -> None:
        sleep_until(self.down.exists, what=f"{self.down} to appear")
        with open(self.down, "rb", buffering=0) as handle:
            while piece := handle.read(1 << 20):
                with self.cond:
                    self.got += piece
                    self.cond.notify_all()
        self.eof = True

    def join(self) -> None:
        for thread in self.threads:
            thread.join(60)


def test_bursts_with_pauses_on_many_channels_never_lose_a_wake_up(tmp_path: Path) -> None:
    """Eight channels, each fed in bursts that wait for the child to have read everything first, so
    every burst must be noticed from an empty FIFO: every byte and every EOF arrives."""
    names = [f"ch{i}" for i in range(8)]
    with Relay(tmp_path, names, ring=2 << 20) as relay:
        paced = {
            ch: _Paced(relay.up / f"{ch}_0", relay.down / f"{ch}_0", seed=i) for i, ch in enumerate(names)
        }
        for run in paced.values():
            run.join()
        sleep_until(lambda: all(relay.epochs(ch) for ch in names), what="every epoch event")
    for ch, run in paced.items():
        assert run.lag == ""
        assert run.eof
        assert _sha(bytes(run.got)) == _sha(run.data)
        assert relay.epochs(ch)[0]["ended"] == "eof"


class _RegistersAfterTheClose(SplicePump):
    """A real pump whose upstream is registered only once the producer has written and closed (the
    test sets ``closed``), so its first event says 'data' and 'hang-up' at once: the race a fast
    producer wins, made certain."""

    closed = threading.Event()

    def __init__(self, upstream: int, path: str, ring: Ring, owner: ChannelRelay, now: float) -> None:
        assert self.closed.wait(30)
        super().__init__(upstream, path, ring, owner, now)


class _ForgetsTheHangUp(_RegistersAfterTheClose):
    """The same with the lost wake-up this relay is built against: EPOLLHUP is ignored, so the
    short splice of the last bytes ends in 'wait for an edge', and none will come."""

    closed = threading.Event()

    def on_poll(self, events: list[tuple[int, int]], now: float) -> bool:
        self.hup = False
        alive = super().on_poll([(fd, flags & ~select.EPOLLHUP) for fd, flags in events], now)
        self.hup = False
        return alive


def _write_and_close(relay: Relay, data: bytes, pump: type[_RegistersAfterTheClose]) -> None:
    """Make the pump ``pump``; a producer writes ``data`` (less than a default pipe) and closes,
    then lets the pump register. The child has not opened its FIFO: the pump reads into the ring
    (a direct splice would see EOF by itself: the feeder's blocking splice returns 0)."""
    for channel in relay.relay.relays:
        channel.new_pump = pump

    def produce() -> None:
        os.mkfifo(relay.up / "train_0")
        fd = os.open(relay.up / "train_0", os.O_WRONLY)  # returns once the relay has opened it
        os.write(fd, data)
        os.close(fd)
        pump.closed.set()

    threading.Thread(target=produce, daemon=True).start()
    sleep_until(lambda: relay.relay.relays[0].ring.size == len(data), what="the bytes in the ring")


def _reader(relay: Relay) -> threading.Thread:
    """The child: reads its FIFO to EOF into the thread's ``got`` list."""
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(_consume(relay.down / "train_0")), daemon=True)
    reader.got = got  # type: ignore[attr-defined]
    reader.start()
    return reader


def test_a_last_write_and_close_seen_in_one_event_end_the_epoch(tmp_path: Path) -> None:
    """The producer wrote its last bytes and closed before the relay looked: the bytes and EOF
    both reach the child, and the epoch ends with ``eof``."""
    data = random.Random(6).randbytes(60_000)
    with Relay(tmp_path, ["train"]) as relay:
        _write_and_close(relay, data, _RegistersAfterTheClose)
        reader = _reader(relay)
        reader.join(30)
        sleep_until(lambda: relay.epochs("train"), what="the epoch event")
    assert reader.got == [data]  # type: ignore[attr-defined]
    assert relay.epochs("train")[0]["ended"] == "eof"


def test_a_pump_that_forgets_the_hang_up_leaves_the_child_without_eof(tmp_path: Path) -> None:
    """The negative twin: with EPOLLHUP ignored, the pump settles (nothing known ready) with the
    epoch not over; the child gets the bytes but never EOF until the relay stops."""
    data = random.Random(6).randbytes(60_000)
    with Relay(tmp_path, ["train"]) as relay:
        _write_and_close(relay, data, _ForgetsTheHangUp)
        pump = relay.relay.relays[0].pump
        assert isinstance(pump, _ForgetsTheHangUp)
        sleep_until(lambda: not pump.up, what="the pump to settle")
        assert pump.upstream_open
        reader = _reader(relay)
        sleep_until(lambda: pump.moved == len(data) and not pump.ring.size, what="the bytes to the child")
        assert not relay.epochs("train")
        assert reader.is_alive()  # still waiting for EOF
    reader.join(30)  # stop() ended the epoch: the reader gets EOF now
    assert reader.got == [data]  # type: ignore[attr-defined]


def test_a_close_while_the_rings_tail_is_full_still_gives_eof(tmp_path: Path) -> None:
    """The producer closes while the ring's tail pipe has no free slot (one-page pipes, one byte in):
    the kernel then answers the splice with EAGAIN although upstream is at EOF, and that must not be
    taken for 'upstream empty, wait for a write' (no event comes after the hang-up): the child gets
    the byte and EOF, and the epoch ends with ``eof`` after a second ring pipe proved the EOF."""
    one_page = PipeLimits(max_size=4096, user_soft=0, exempt=True, in_use=0)
    with Relay(tmp_path, ["train"], ring=1 << 20, limits=one_page) as relay:
        os.mkfifo(relay.up / "train_0")
        fd = os.open(relay.up / "train_0", os.O_WRONLY)  # returns once the relay has opened it
        os.write(fd, b"x")
        sleep_until(lambda: relay.relay.relays[0].ring.size == 1, what="the byte in the ring")
        os.close(fd)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(_consume(relay.down / "train_0")), daemon=True)
        reader.start()
        reader.join(30)
        assert got == [b"x"], "the child did not get EOF"
        sleep_until(lambda: relay.epochs("train"), what="the epoch event")
    stats = relay.epochs("train")[0]
    assert stats["ended"] == "eof"
    assert stats["ring_bytes"] == 2 * 4096  # the full tail was left for a second pipe: the path ran


class _Pausing:
    """A child that reads its first MiB, then stops until ``resume`` is set, then reads to EOF."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.got = bytearray()
        self.resume = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sleep_until(self.path.exists, what=f"{self.path} to appear")
        with open(self.path, "rb", buffering=0) as handle:
            while len(self.got) < 1 << 20:
                self.got += handle.read((1 << 20) - len(self.got))
            assert self.resume.wait(30)
            while piece := handle.read(1 << 20):
                self.got += piece


def _write_all(path: Path, data: bytes) -> None:
    """Create the FIFO and write ``data`` into it in 1 MiB writes; a relay stopped early (EPIPE)
    ends it."""
    os.mkfifo(path)
    with contextlib.suppress(BrokenPipeError), open(path, "wb", buffering=0) as handle:
        for start in range(0, len(data), 1 << 20):
            handle.write(data[start : start + (1 << 20)])


def _pause_then_resume(
    tmp_path: Path, pump: type[SplicePump]
) -> tuple[Relay, _Pausing, bytes, threading.Thread]:
    """8 MiB through a 4 MiB ring to a child that stops after 1 MiB until the ring has read ahead."""
    data = random.Random(11).randbytes(8 << 20)
    relay = Relay(tmp_path, ["train"], ring=4 << 20)
    relay.relay.relays[0].new_pump = pump
    relay.__enter__()
    producer = threading.Thread(target=_write_all, args=(relay.up / "train_0", data), daemon=True)
    producer.start()
    child = _Pausing(relay.down / "train_0")
    sleep_until(lambda: relay.relay.snapshot()[0].ring_held > 0, what="read-ahead into the ring")
    child.resume.set()
    return relay, child, data, producer


def test_a_child_that_stops_and_resumes_gets_the_ring_and_the_rest(tmp_path: Path) -> None:
    """The child stops with its FIFO full until the ring has read ahead, then reads on: the ring
    drains into it on the FIFO's room edges, and every byte and EOF arrives in order."""
    relay, child, data, producer = _pause_then_resume(tmp_path, SplicePump)
    try:
        child.thread.join(30)
        producer.join(10)
        sleep_until(lambda: relay.epochs("train"), what="the epoch event")
    finally:
        relay.__exit__()
    assert _sha(bytes(child.got)) == _sha(data)
    assert relay.epochs("train")[0]["ring_peak"] > 0
