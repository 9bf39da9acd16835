"""The emulator's writer: the throttle (a token bucket over the write chunks, on the real clock) and
the pieces it writes."""

from __future__ import annotations

import random
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsupervise.pipemode.emulate import StreamOptions, Throttle, parse_rate, pieces


@pytest.mark.parametrize("rate", [25.0, 100.0])
def test_the_bucket_never_lets_bytes_through_early_and_keeps_its_schedule(rate: float) -> None:
    """Over 0.4 s of chunks: no chunk goes before its turn (a busy machine can only make it late,
    and then the schedule catches up: the due time is exactly bytes/rate after the start)."""
    throttle = Throttle(rate)
    throttle.pace(throttle.chunk)
    began, sent = time.monotonic(), 0
    start = throttle.due
    assert start is not None
    while sent < rate * 1e6 * 0.4:
        throttle.pace(throttle.chunk)
        sent += throttle.chunk
        assert time.monotonic() - began >= (sent - throttle.chunk) / (rate * 1e6) - 1e-3
    assert throttle.due == pytest.approx(start + sent / (rate * 1e6), abs=1e-6)


def test_a_late_writer_catches_up() -> None:
    """The writer was not scheduled for 0.3 s (a busy machine): it makes up the 0.3 s at once."""
    throttle = Throttle(10.0)
    throttle.pace(throttle.chunk)
    time.sleep(0.3)  # the scenario: the writer did not run for this long
    free = 0
    while throttle.pace(throttle.chunk) == 0.0:
        free += throttle.chunk
    assert free >= 0.25 * 10e6


def test_a_stalled_reader_earns_no_burst() -> None:
    """The negative twin: the same 0.3 s spent on a full FIFO makes up only SLACK (0.1 s) worth."""
    throttle = Throttle(10.0)
    throttle.pace(throttle.chunk)
    time.sleep(0.3)  # the scenario: the write blocked this long on a full FIFO
    throttle.held_up(0.3)
    free = 0
    while throttle.pace(throttle.chunk) == 0.0:
        free += throttle.chunk
    assert free <= 0.1 * 10e6 + 2 * throttle.chunk


def test_unlimited_is_not_paced() -> None:
    """No rate: 1 MiB chunks, never a sleep."""
    throttle = Throttle(None)
    assert throttle.chunk == 1 << 20
    assert all(throttle.pace(1 << 20) == 0.0 for _ in range(1000))


def test_rates_parse_or_say_what_is_wrong() -> None:
    """MB/s or 'unlimited'; anything else is an error naming the value."""
    assert [parse_rate("400"), parse_rate("12.5"), parse_rate("unlimited")] == [400.0, 12.5, None]
    for bad in ("0", "-3", "fast", "inf5"):
        with pytest.raises(ValueError, match="is not a rate"):
            parse_rate(bad)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 70_000), max_size=12), size=st.sampled_from([4096, 32768, 1 << 20]))
def test_pieces_are_the_stream_cut_evenly(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], size: int
) -> None:
    """Objects of any sizes, RecordIO-wrapped, come out as the exact stream in pieces of ``size``."""
    directory = tmp_path_factory.mktemp("objects")
    rng = random.Random(len(sizes))
    objects = [rng.randbytes(n) for n in sizes]
    paths = []
    for index, data in enumerate(objects):
        path = Path(directory) / f"{index:03d}"
        path.write_bytes(data)
        paths.append(str(path))
    got = list(pieces(paths, StreamOptions(epochs=1, recordio=True), size))
    expected = b"".join(struct.pack("<II", 0xCED7230A, len(o)) + o + b"\0" * (-len(o) % 4) for o in objects)
    assert b"".join(got) == expected
    assert all(len(piece) == size for piece in got[:-1])
    assert all(0 < len(piece) <= size for piece in got)
