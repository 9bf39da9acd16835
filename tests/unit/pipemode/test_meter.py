"""The relay's live figures: MB/s from two samples, and the snapshot record."""

from __future__ import annotations

import dataclasses

import pytest

from smsupervise.pipemode.meter import SAMPLE_EVERY, ChannelSnapshot, first_sample


def test_mb_per_s_is_the_bytes_between_the_last_two_samples_over_their_span() -> None:
    """3 MB delivered between samples 1.5 s apart reads 2 MB/s, whatever came before."""
    sample = first_sample(10.0).next(11.0, 5_000_000).next(12.5, 8_000_000)
    assert sample.mb_per_s(12.6) == 2.0


def test_mb_per_s_is_zero_once_the_newest_sample_is_stale() -> None:
    """The twin: the same samples read long after the newest one give 0, not the old rate."""
    sample = first_sample(10.0).next(11.0, 5_000_000).next(12.5, 8_000_000)
    assert sample.mb_per_s(12.5 + 2 * SAMPLE_EVERY + 0.1) == 0.0


def test_a_first_sample_alone_gives_no_rate() -> None:
    """Before a second sample there is no span: 0 MB/s rather than a division by zero."""
    assert first_sample(3.0).mb_per_s(3.0) == 0.0


def test_a_snapshot_is_frozen_and_flattens_to_its_fields() -> None:
    """The record handed across threads cannot be changed, and as_dict names every field."""
    snap = ChannelSnapshot("train", 2, 10, 30, 1.5, "input-starved", 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.bytes = 5  # type: ignore[misc]
    assert snap.as_dict() == {
        "channel": "train",
        "epoch": 2,
        "epoch_bytes": 10,
        "bytes": 30,
        "mb_per_s": 1.5,
        "state": "input-starved",
        "ring_held": 0,
    }
