"""Pipe mode: the splice relay and the emulator, on real FIFOs, real threads and real processes.

The relay is exercised two ways: in-process (``PipeRelay`` with real FIFOs and its real threads, for
the many data-path cases), and end to end as ``smsupervise --pipe-relay train``, as a subreaper and
as PID 1, with the emulator playing SageMaker's side.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import random
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

from smsupervise.pipemode.emulate import recordio_records
from smsupervise.pipemode.relay import ChannelSpec, PipeRelay
from tests.conftest import PYTHON, Supervised, events, sleep_until, supervisor_argv

EMULATE = [PYTHON, "-m", "smsupervise.pipemode.emulate"]


class Relay:
    """A PipeRelay over real FIFOs, with its events collected."""

    def __init__(self, tmp: Path, channels: list[str], ring: int = 8 << 20) -> None:
        self.up = tmp / "data"
        self.down = tmp / "relay"
        self.up.mkdir(exist_ok=True)
        self.events: list[tuple[str, dict[str, Any]]] = []
        specs = tuple(ChannelSpec(ch, str(self.up), str(self.down), ring) for ch in channels)
        self.relay = PipeRelay(specs, lambda event, fields: self.events.append((event, fields)))

    def __enter__(self) -> Relay:
        self.relay.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.relay.stop()

    def epochs(self, channel: str) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == "pipe_epoch_done" and f["channel"] == channel]


def _produce(path: Path, data: bytes, rng: random.Random, delay: float = 0.0) -> threading.Thread:
    """A producer thread: create the FIFO (after ``delay``), write ``data`` in random chunk sizes."""

    def run() -> None:
        time.sleep(delay)  # a FIFO that appears late: the delay is the scenario, not synchronisation
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


def _consume(path: Path, chunk: int = 1 << 20, pause: float = 0.0, limit: int | None = None) -> bytes:
    """A reader like the AWS example: wait for the FIFO to exist, open it, read (slowly if asked)."""
    sleep_until(path.exists, timeout=30, what=f"{path} to appear")
    got = bytearray()
    with open(path, "rb", buffering=0) as handle:
        while limit is None or len(got) < limit:
            piece = handle.read(chunk)
            if not piece:
                break
            got += piece
            if pause:
                time.sleep(pause)  # a slow trainer
    return bytes(got)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("size", "seed"), [(0, 1), (1, 2), (65535, 3), ((1 << 20) + 7, 4), (37 * (1 << 20) + 3, 5)]
)
def test_bytes_arrive_exactly_whatever_the_size_and_chunking(tmp_path: Path, size: int, seed: int) -> None:
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
    pause=st.sampled_from([0.0, 0.001]),
)
def test_any_stream_through_any_ring_arrives_exactly(
    size: int, seed: int, ring: int, chunk: int, pause: float
) -> None:
    """Random sizes, producer chunkings (seeded), ring sizes and reader speeds: byte-exact."""
    rng = random.Random(seed)
    data = rng.randbytes(size)
    with tempfile.TemporaryDirectory() as tmp, Relay(Path(tmp), ["train"], ring=ring) as relay:
        producer = _produce(relay.up / "train_0", data, rng)
        got = _consume(relay.down / "train_0", chunk=max(chunk, 1 << 12) if pause else chunk, pause=pause)
        producer.join(10)
    assert _sha(got) == _sha(data)


def test_a_slow_consumer_gets_everything_and_the_ring_reads_ahead(tmp_path: Path) -> None:
    """The trainer is slow: the ring fills (up to its size) while it computes; nothing is lost, and
    the epoch is reported as trainer-bound."""
    rng = random.Random(9)
    data = rng.randbytes(24 << 20)
    with Relay(tmp_path, ["train"], ring=16 << 20) as relay:
        producer = _produce(relay.up / "train_0", data, rng)
        got = _consume(relay.down / "train_0", chunk=1 << 20, pause=0.02)
        producer.join(10)
        sleep_until(lambda: relay.epochs("train"), what="the epoch event")
    assert _sha(got) == _sha(data)
    stats = relay.epochs("train")[0]
    assert stats["ring_peak"] > 8 << 20  # it read ahead, well past what the FIFOs alone hold
    assert stats["ring_bytes"] <= 16 << 20
    assert stats["trainer_bound_s"] > stats["input_starved_s"]


def test_a_slow_producer_is_reported_as_input_starved(tmp_path: Path) -> None:
    """The negative twin of the metric: a producer that trickles makes the epoch input-starved."""
    with Relay(tmp_path, ["train"]) as relay:
        path = relay.up / "train_0"

        def trickle() -> None:
            os.mkfifo(path)
            fd = os.open(path, os.O_WRONLY)
            for _ in range(20):
                os.write(fd, b"x" * 1000)
                time.sleep(0.02)  # the scenario: an input-bound channel
            os.close(fd)

        producer = threading.Thread(target=trickle, daemon=True)
        producer.start()
        got = _consume(relay.down / "train_0")
        producer.join(10)
        sleep_until(lambda: relay.epochs("train"), what="the epoch event")
    assert got == b"x" * 20000
    stats = relay.epochs("train")[0]
    assert stats["input_starved_s"] > stats["trainer_bound_s"]


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


def test_fifos_that_appear_late_and_several_channels_at_once(tmp_path: Path) -> None:
    rng = random.Random(5)
    payload = {ch: rng.randbytes(rng.randrange(1, 6 << 20)) for ch in ("train", "validation", "test")}
    with Relay(tmp_path, list(payload)) as relay:
        producers = [
            _produce(relay.up / f"{ch}_0", data, random.Random(ch), delay=0.3) for ch, data in payload.items()
        ]
        results: dict[str, bytes] = {}
        readers = [
            threading.Thread(target=lambda c=ch: results.__setitem__(c, _consume(relay.down / f"{c}_0")))
            for ch in payload
        ]
        for thread in [*readers]:
            thread.start()
        for thread in [*producers, *readers]:
            thread.join(30)
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


def test_relay_stops_promptly_even_with_nothing_flowing(tmp_path: Path) -> None:
    """No upstream FIFO at all, or one nobody writes to: stop() returns and the threads are gone."""
    relay = Relay(tmp_path, ["never", "idle"])
    os.mkfifo(relay.up / "idle_0")
    relay.relay.start()
    begun = time.monotonic()
    relay.relay.stop()
    assert time.monotonic() - begun < 2
    assert not any(thread.is_alive() for thread in relay.relay.threads)


# -- the emulator --------------------------------------------------------------------------------


def _emulate(data_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*EMULATE, "--data-dir", str(data_dir), *args], stderr=subprocess.PIPE)


def test_emulator_streams_a_directory_of_objects_as_recordio_for_several_epochs(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    (objects / "b").mkdir(parents=True)
    contents = {"a.bin": b"first", "b/c.bin": b"second object!", "b/d.bin": b""}
    for name, data in contents.items():
        (objects / name).write_bytes(gzip.compress(data))
    data_dir = tmp_path / "data"
    run = _emulate(data_dir, "--channel", f"train={objects}", "--epochs", "3", "--recordio", "--gunzip")
    for epoch in range(3):
        got = _consume(data_dir / f"train_{epoch}")
        assert recordio_records(got) == [contents[k] for k in sorted(contents)]
    _, err = run.communicate(timeout=10)
    assert run.returncode == 0
    assert [line for line in err.splitlines() if b"epoch_streamed" in line].__len__() == 3


def test_emulator_rejects_a_bad_channel_argument(tmp_path: Path) -> None:
    result = subprocess.run(
        [*EMULATE, "--data-dir", str(tmp_path), "--channel", "train"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"use NAME=PATH" in result.stderr


# -- end to end, as PID 1 ----------------------------------------------------------------------


def _pipe_tree(root: Path, channels: dict[str, str]) -> Path:
    base = root / "ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "data").mkdir(parents=True)
    config = ",".join(f'"{ch}": {{"TrainingInputMode": "{mode}"}}' for ch, mode in channels.items())
    (base / "input" / "config" / "inputdataconfig.json").write_text("{" + config + "}")
    return base


READER = """
import hashlib, os, sys, time
channel = os.environ["SM_CHANNEL_TRAIN"]
for epoch in range(int(sys.argv[1])):
    path = f"{channel}_{epoch}"
    while not os.path.exists(path):  # PipeModeDataset-style: poll for the FIFO, then open it
        time.sleep(0.01)
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 16):
            digest.update(chunk); size += len(chunk)
    print(epoch, size, digest.hexdigest(), flush=True)
print("files", os.environ["SM_CHANNEL_FILES"], flush=True)
"""


def test_end_to_end_a_pipe_mode_reader_through_the_relay(mode: str, tmp_path: Path) -> None:
    """smsupervise --pipe-relay train with the emulator: a polling reader sees every epoch exactly;
    a File channel is left alone; per-epoch metrics arrive as events; the relay dir is removed."""
    base = _pipe_tree(tmp_path, {"train": "Pipe", "files": "File"})
    source = tmp_path / "train.bin"
    data = random.Random(1).randbytes(9 << 20)
    source.write_bytes(data)
    emulator = _emulate(base / "input" / "data", "--channel", f"train={source}", "--epochs", "2")
    script = tmp_path / "reader.py"
    script.write_text(READER)
    relay_dir = tmp_path / "relay"
    env = {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": f"{PYTHON} {script} 2",
    }
    result = subprocess.run(
        supervisor_argv(mode, "--pipe-relay", "--pipe-relay-dir", str(relay_dir), "train"),
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    emulator.communicate(timeout=30)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    lines = [record["msg"] for record in map(_json, result.stdout.splitlines()) if "msg" in record]
    assert lines[:2] == [f"{epoch} {len(data)} {_sha(data)}" for epoch in range(2)]
    assert lines[2] == f"files {base}/input/data/files"
    done = [e for e in events(result.stderr) if e["event"] == "pipe_epoch_done"]
    assert [(e["epoch"], e["bytes"], e["ended"]) for e in done] == [
        (0, len(data), "eof"),
        (1, len(data), "eof"),
    ]
    assert all(e["mb_per_s"] > 0 for e in done)
    assert not relay_dir.exists()


def test_with_the_relay_on_signals_and_stops_still_work(mode: str, tmp_path: Path) -> None:
    """A trainer blocked on a channel nobody feeds: SIGUSR1 is still forwarded, SIGTERM still stops
    it, orphans are still reaped, and smsupervise exits with the child's status promptly."""
    base = _pipe_tree(tmp_path, {"train": "Pipe"})
    os.mkfifo(base / "input" / "data" / "train_0")  # the platform made it but never writes
    marker = tmp_path / "usr1"
    script = tmp_path / "blocked.py"
    script.write_text(
        "import os, signal, subprocess, sys\n"
        f"signal.signal(signal.SIGUSR1, lambda *a: open({str(marker)!r}, 'w').close())\n"
        "subprocess.Popen(['sleep', '1000'], start_new_session=True)  # an orphan-to-be\n"
        "fd = os.open(os.environ['SM_CHANNEL_TRAIN'] + '_0', os.O_RDONLY)\n"
        "while True: signal.pause()\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": f"{PYTHON} {script}",
    }
    run = Supervised(mode, supervisor_argv(mode, "--pipe-relay", "--grace-period", "5", "train"), env=env)
    sleep_until(lambda: _opened_fifo(run), timeout=30, what="the trainer to open its FIFO")
    run.signal(signal.SIGUSR1)
    sleep_until(marker.exists, what="SIGUSR1 to reach the trainer")
    begun = time.monotonic()
    run.signal(signal.SIGTERM)
    code, _, err = run.wait(timeout=30)
    assert code == 143
    assert time.monotonic() - begun < 5
    names = [e["event"] for e in events(err)]
    assert "leftovers_terminated" in names


def _opened_fifo(run: Supervised) -> bool:
    from smsupervise.linux.proctree import descendants

    for pid in descendants(run.init_pid):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("train_0"):
                    return True
        except OSError:
            continue
    return False


def _json(line: bytes) -> dict[str, Any]:
    import orjson

    value = orjson.loads(line)
    return value if isinstance(value, dict) else {}
