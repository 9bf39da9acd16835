"""The verdict and the merging of the event streams, on results built by hand (pure functions)."""

from __future__ import annotations

import pytest

from smsupervise.pipebench.results import EpochResult, RunResult, epochs_from_events
from smsupervise.pipebench.verdict import bound, judge, speed


def _run(
    rate: float | None, mb_per_s: float, starved: float, bound_s: float, reader: str = "reader"
) -> RunResult:
    seconds = 1.0
    epoch = EpochResult(
        "train", 0, "eof", int(mb_per_s * 1e6), seconds, mb_per_s, seconds, None, 0.01, 0.0, starved, bound_s
    )
    return RunResult(reader, rate, (epoch,), 0, 0.5, 2.0, None)  # type: ignore[arg-type]


def test_a_run_where_the_reader_waited_is_input_bound() -> None:
    """More starved than bound: input-bound; the reverse: trainer-bound."""
    assert bound(_run(50, 50, starved=0.9, bound_s=0.05)) == "input-bound"
    assert bound(_run(50, 20, starved=0.05, bound_s=0.9)) == "trainer-bound"


def test_a_run_at_the_full_rate_with_no_waiting_is_input_bound() -> None:
    """Neither waited, but the reader got the whole rate: the rate is the limit; below 90 % of it, not."""
    assert bound(_run(100, 98, starved=0.0, bound_s=0.0)) == "input-bound"
    assert bound(_run(100, 60, starved=0.0, bound_s=0.0)) == "trainer-bound"


def test_real_waiting_decides_before_the_delivered_figure() -> None:
    """Data waited 60 % of the time: trainer-bound, even if read-ahead lifted MB/s near the rate."""
    assert bound(_run(100, 97, starved=0.1, bound_s=0.6)) == "trainer-bound"


def test_the_verdict_names_the_crossover_when_the_sweep_spans_it() -> None:
    """Input-bound at the low rate, trainer-bound at the high one: 'input-bound below' the reader's speed."""
    verdict = judge([_run(None, 900, 0.1, 0.9, "cat"), _run(50, 50, 0.9, 0.0), _run(400, 180, 0.0, 0.8)])
    assert verdict.kind == "input-bound below"
    assert verdict.text.startswith("input-bound below ~180 MB/s: the reader consumes up to 180 MB/s")
    assert "(`cat`: 900 MB/s)" in verdict.text
    assert verdict.reader_mb_per_s == 180


def test_all_trainer_bound_says_pipe_mode_is_not_the_bottleneck() -> None:
    """Every run trainer-bound: the reader is the limit at every rate tried."""
    verdict = judge([_run(100, 30, 0.0, 0.9), _run(400, 31, 0.0, 0.9)])
    assert verdict.kind == "trainer-bound"
    assert "from 100 MB/s" in verdict.text
    assert "Pipe mode is not your bottleneck" in verdict.text


def test_a_reader_near_cat_is_flagged_as_limited_by_the_harness() -> None:
    """A reader at 80 % or more of `cat` gets a note that its speed is a lower bound; slower, no note."""
    near = judge([_run(None, 1000, 0.5, 0.5, "cat"), _run(None, 950, 0.9, 0.1)])
    assert any("this machine and harness are the limit" in note for note in near.notes)
    far = judge([_run(None, 1000, 0.5, 0.5, "cat"), _run(None, 300, 0.1, 0.9)])
    assert not any("harness are the limit" in note for note in far.notes)


def test_speeds_read_as_people_write_them() -> None:
    """MB/s below 1000, GB/s above; a dash for no figure."""
    assert [speed(7.25), speed(750.4), speed(1900), speed(None)] == ["7.25 MB/s", "750 MB/s", "1.9 GB/s", "-"]


def test_without_the_relay_an_unread_epoch_is_one_the_writer_never_reported() -> None:
    """The writer's report makes an epoch; a missing one is 'not read'."""
    written = [
        {"channel": "train", "epoch": 0, "ended": "eof", "bytes": 10, "streaming_s": 1.0, "rate_mb_per_s": 5}
    ]
    epochs = epochs_from_events(["train"], 2, written, None)
    assert [(e.epoch, e.ended, e.bytes) for e in epochs] == [(0, "eof", 10), (1, "not read", 0)]


def test_with_the_relay_its_figures_win_and_the_time_before_the_open_counts_for_neither() -> None:
    """The relay's bytes and times are the reader's; its wait for the reader's open counts in the
    delivered figure but not in the reading time, nor as trainer-bound."""
    written = [{"channel": "train", "epoch": 0, "ended": "eof", "bytes": 4_000_000, "first_byte_s": 0.2}]
    relayed = [
        {
            "channel": "train",
            "epoch": 0,
            "ended": "eof",
            "bytes": 4_000_000,
            "seconds": 3.0,
            "wait_open_s": 1.0,
            "input_starved_s": 0.5,
            "trainer_bound_s": 1.25,
        }
    ]
    (epoch,) = epochs_from_events(["train"], 1, written, relayed)
    assert (epoch.seconds, epoch.reading_s, epoch.wait_open_s) == (3.0, 2.0, 1.0)
    assert epoch.mb_per_s == pytest.approx(4 / 3)
    assert (epoch.input_starved_s, epoch.trainer_bound_s, epoch.ttfb_s) == (0.5, 0.25, 0.2)


def test_with_the_relay_an_epoch_it_never_reported_was_not_read() -> None:
    """The negative twin: the writer may have filled the ring, but the reader never got the epoch."""
    written = [{"channel": "train", "epoch": 0, "ended": "eof", "bytes": 10}]
    (epoch,) = epochs_from_events(["train"], 1, written, [])
    assert epoch.ended == "not read"
