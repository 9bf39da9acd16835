"""The emulator's throttle: a token bucket over the write chunks, on the real clock."""

from __future__ import annotations

import time

import pytest

from smsupervise.pipemode.emulate import Throttle, parse_rate


def _paced(rate: float, total: int) -> tuple[float, int]:
    """Seconds to let ``total`` bytes through at ``rate`` MB/s, from the first chunk to the last."""
    throttle = Throttle(rate)
    began = None
    sent = 0
    while sent < total:
        throttle.pace(throttle.chunk)
        began = time.monotonic() if began is None else began
        sent += throttle.chunk
    assert began is not None
    return time.monotonic() - began, sent


@pytest.mark.parametrize("rate", [25.0, 100.0])
def test_the_bucket_lets_the_rate_through(rate: float) -> None:
    """Over half a second, bytes/elapsed is the rate within 5 % (late wake-ups are caught up)."""
    seconds, sent = _paced(rate, int(rate * 1e6 * 0.5))
    assert (sent - Throttle(rate).chunk) / seconds / 1e6 == pytest.approx(rate, rel=0.05)


def test_a_stalled_reader_earns_no_burst() -> None:
    """After a 0.3 s stall the bucket catches up at most SLACK (0.1 s) worth of bytes at once."""
    throttle = Throttle(10.0)
    throttle.pace(throttle.chunk)
    time.sleep(0.3)  # the scenario: the reader stalled (the writer was blocked this long)
    free = 0
    while throttle.pace(throttle.chunk) == 0.0:
        free += throttle.chunk
    assert free <= 0.1 * 10e6 + throttle.chunk


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
