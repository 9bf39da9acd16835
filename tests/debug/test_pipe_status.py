"""``smsupervise-debug status`` on a real Pipe-mode run: each channel's epoch, bytes, MB/s and
whether it waits on the producer (input-starved) or on the training code (trainer-bound).

The producer is this test, writing into the platform's FIFO; the training job is a real process
reading (or not reading) the relay's FIFO.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from smsupervise.debug import render
from tests.conftest import PYTHON, Supervised, sleep_until
from tests.debug.conftest import CLIENT_ENV

MIB = 1 << 20


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="smsupervise-dbg-pipe-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _status(sock: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "smsupervise.debug", "--socket", str(sock), *flags, "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=CLIENT_ENV,
    )


def _channel(sock: Path) -> dict[str, Any]:
    """The ``train`` channel of ``status --json``."""
    done = _status(sock, "--json")
    assert done.returncode == 0, done.stderr
    (channel,) = orjson.loads(done.stdout)["pipes"]
    assert channel["channel"] == "train"
    return dict(channel)


def _run(start: Callable[..., Supervised], tmp_path: Path, sock: Path, job: str) -> tuple[Supervised, int]:
    """smsupervise --pipe-relay train over a one-channel Pipe tree; returns it and the platform
    FIFO's write end (opened once the relay reads it)."""
    base = tmp_path / "ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "data").mkdir(parents=True)
    (base / "input" / "config" / "inputdataconfig.json").write_text(
        '{"train": {"TrainingInputMode": "Pipe"}}'
    )
    upstream = base / "input" / "data" / "train_0"
    os.mkfifo(upstream)
    env = {"PATH": os.environ["PATH"], "SAGEMAKER_BASE_DIR": str(base), "SMSUPERVISE_TRAIN": job}
    run = start(
        "--control-socket",
        str(sock),
        "--pipe-relay",
        "--pipe-relay-dir",
        str(tmp_path / "relay"),
        "--pipe-buffer",
        "4M",
        "train",
        env=env,
    )

    def writer() -> int | None:
        try:
            return os.open(upstream, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: the relay has not opened it for reading yet
                raise
            return None

    fd = sleep_until(writer, what="the relay reading the platform's FIFO")
    os.set_blocking(fd, True)
    return run, fd


def _stop(run: Supervised, fd: int) -> None:
    run.signal(signal.SIGTERM)
    run.wait()
    os.close(fd)


def test_status_shows_bytes_growing_and_a_stalled_producer_as_input_starved(
    start: Callable[..., Supervised], tmp_path: Path, sock_dir: Path
) -> None:
    """While the job reads everything and the producer stops writing, status shows the bytes
    delivered so far, growing with each write, and the channel as input-starved."""
    sock = sock_dir / "c.sock"
    run, fd = _run(start, tmp_path, sock, "sh -c 'exec cat \"$SM_CHANNEL_TRAIN\"_0 >/dev/null'")
    os.write(fd, b"a" * MIB)
    first = sleep_until(lambda: (c := _channel(sock))["bytes"] == MIB and c, what="1 MiB delivered")
    assert first["epoch"] == 0
    os.write(fd, b"b" * 2 * MIB)
    later = sleep_until(
        lambda: (c := _channel(sock))["bytes"] == 3 * MIB and c["state"] == "input-starved" and c,
        what="3 MiB delivered and the relay waiting on the producer",
    )
    assert later["epoch_bytes"] == 3 * MIB
    assert later["ring_held"] == 0
    human = _status(sock)
    assert "pipe train epoch 0: 3.0M (3.0M this epoch)" in human.stdout
    assert "input-starved" in human.stdout
    _stop(run, fd)


def test_status_shows_a_stalled_job_as_trainer_bound(
    start: Callable[..., Supervised], tmp_path: Path, sock_dir: Path
) -> None:
    """While the job holds its FIFO open without reading and the producer keeps writing, status
    shows the channel as trainer-bound, with data read ahead (the twin of the input-starved test)."""
    sock = sock_dir / "c.sock"
    run, fd = _run(start, tmp_path, sock, "sh -c 'exec 3<\"$SM_CHANNEL_TRAIN\"_0; exec sleep 600'")

    def produce() -> None:
        chunk = b"c" * MIB
        try:
            while True:
                os.write(fd, chunk)  # blocks once the relay's ring and both FIFOs are full
        except OSError:  # EPIPE once smsupervise has stopped and closed the FIFO
            return

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    stalled = sleep_until(
        lambda: (c := _channel(sock))["state"] == "trainer-bound" and c["ring_held"] > 0 and c,
        what="the relay waiting on the job with data read ahead",
    )
    assert stalled["epoch"] == 0
    assert stalled["bytes"] <= 2 * MIB  # what the job's FIFO took; the rest is held back
    assert "trainer-bound" in _status(sock).stdout
    assert _channel(sock)["state"] == "trainer-bound"  # it stays so: nobody reads
    run.signal(signal.SIGTERM)
    run.wait()
    producer.join(30)
    assert not producer.is_alive()
    os.close(fd)


def test_a_relayed_channel_renders_its_figures_and_state() -> None:
    """The human line names epoch, bytes, MB/s, the state and what is read ahead."""
    line = render.pipe_channel(
        {
            "channel": "train",
            "epoch": 1,
            "epoch_bytes": 3 * MIB,
            "bytes": 7 * MIB,
            "mb_per_s": 812.5,
            "state": "trainer-bound",
            "ring_held": 2 * MIB,
        }
    )
    assert line == "pipe train epoch 1: 7.0M (3.0M this epoch), 812.5 MB/s, trainer-bound, 2.0M read ahead"


def test_a_channel_without_the_relay_says_so() -> None:
    """The twin: without --pipe-relay only the name is known, and the line says why."""
    line = render.pipe_channel({"channel": "train"})
    assert line == "pipe train: not relayed (the job reads the platform's FIFOs)"
