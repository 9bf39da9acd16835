"""What one run measured, as typed frozen data, built from the event streams (pure functions).

Two sources: the emulator's ``epoch_streamed`` lines (the platform's writer: bytes sent, time to first
byte, time blocked on a full FIFO, time held back by the rate while the FIFO stood empty) and, with
the relay, smsupervise's ``pipe_epoch_done`` events (what the reader was given: bytes delivered,
input-starved and trainer-bound time measured at the reader's FIFO). With the relay its figures are
the reader's; without it, the writer's are the closest there are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

MB = 1_000_000
Ended = Literal["eof", "closed early", "not read"]


@dataclass(frozen=True)
class EpochResult:
    """One channel's epoch in one run."""

    channel: str
    epoch: int
    ended: Ended  # "closed early": the reader closed it before EOF, so no throughput is given
    bytes: int  # delivered to the reader (with the relay), else taken from the platform's writer
    seconds: float  # from the platform's first byte to EOF at the reader
    mb_per_s: float | None  # delivered: bytes / seconds; None unless the epoch was read to EOF
    reading_s: float  # of ``seconds``, while the reader had the epoch open
    sent_mb_per_s: float | None  # as the platform's writer sent it, from its first byte to its last
    ttfb_s: float | None  # from when the platform could send the epoch to its first byte taken
    wait_open_s: float  # data waited for the reader to open the epoch (start-up, between epochs)
    input_starved_s: float  # the reader had the epoch open and waited for data
    trainer_bound_s: float  # the reader had the epoch open and data waited for it


@dataclass(frozen=True)
class RunResult:
    """One supervised run of a reader at one rate."""

    reader: Literal["reader", "cat"]
    rate: float | None  # MB/s, None: unlimited
    epochs: tuple[EpochResult, ...]
    exit_code: int | None  # the reader's (smsupervise passes it through); None if it never ran
    reader_cpu_s: float | None  # user+system of the reader and its descendants
    wall_s: float
    problem: str | None  # why this run is not a measurement, in words; None if it is

    @property
    def complete(self) -> tuple[EpochResult, ...]:
        """The epochs read to EOF: the only ones with a throughput."""
        return tuple(epoch for epoch in self.epochs if epoch.ended == "eof")

    @property
    def mb_per_s(self) -> float | None:
        """Delivered MB/s over the complete epochs, per channel (the rate is per channel too)."""
        return self._speed(sum(epoch.seconds for epoch in self.complete))

    @property
    def reading_mb_per_s(self) -> float | None:
        """MB/s while the reader had its epochs open: its own speed when it is the limit."""
        return self._speed(sum(epoch.reading_s for epoch in self.complete))

    def _speed(self, seconds: float) -> float | None:
        done = self.complete
        return sum(epoch.bytes for epoch in done) / seconds / MB if done and seconds > 0 else None

    @property
    def starved_s(self) -> float:
        return sum(epoch.input_starved_s for epoch in self.epochs)

    @property
    def bound_s(self) -> float:
        return sum(epoch.trainer_bound_s for epoch in self.epochs)

    @property
    def bytes(self) -> int:
        return sum(epoch.bytes for epoch in self.epochs)


def _float(fields: Mapping[str, Any], key: str) -> float:
    value = fields.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def _epoch(
    channel: str, epoch: int, written: Mapping[str, Any] | None, relayed: Mapping[str, Any] | None
) -> EpochResult:
    """One epoch from the writer's line and (with the relay) the relay's event."""
    if relayed is None and written is None:
        return EpochResult(channel, epoch, "not read", 0, 0.0, None, 0.0, None, None, 0.0, 0.0, 0.0)
    if relayed is not None:
        # The relay's clock runs from the first byte upstream; the time before the reader opened
        # the epoch (the ring read ahead) is its own figure, so start-up is not read as slowness.
        finished = relayed.get("ended") == "eof" and (written is None or written.get("ended") == "eof")
        wait_open = _float(relayed, "wait_open_s")
        seconds = _float(relayed, "seconds")
        reading = max(0.0, seconds - wait_open)
        starved = _float(relayed, "input_starved_s")
        bound = max(0.0, _float(relayed, "trainer_bound_s") - wait_open)
        moved = int(relayed.get("bytes", 0))
        never_opened = relayed.get("ended") == "stopped" and not moved
    else:
        assert written is not None
        finished = written.get("ended") == "eof"
        wait_open = _float(written, "wait_open_s")
        seconds = reading = _float(written, "streaming_s")  # no read-ahead: it starts at the open
        bound = _float(written, "blocked_s")
        starved = _float(written, "starved_s")
        if written.get("rate_mb_per_s") is None:  # unpaced: any time not blocked, the reader waited
            starved = max(0.0, seconds - bound)
        moved = int(written.get("bytes", 0))
        never_opened = False
    ttfb = written.get("first_byte_s") if written is not None else None
    sent = None
    if written is not None and written.get("ended") == "eof" and _float(written, "streaming_s") > 0:
        sent = _float(written, "bytes") / _float(written, "streaming_s") / MB
    ended: Ended = "eof" if finished else "not read" if never_opened else "closed early"
    speed = moved / seconds / MB if finished and seconds > 0 else None
    return EpochResult(
        channel,
        epoch,
        ended,
        moved,
        seconds,
        speed,
        reading,
        sent,
        float(ttfb) if isinstance(ttfb, int | float) else None,
        wait_open,
        starved,
        bound,
    )


def epochs_from_events(
    channels: Sequence[str],
    epochs: int,
    written: Sequence[Mapping[str, Any]],
    relayed: Sequence[Mapping[str, Any]] | None,
) -> tuple[EpochResult, ...]:
    """Every (channel, epoch) asked for, in order, from the writer's reports and the relay's
    (``relayed`` is None without the relay; with it, an epoch the relay never reported was not read)."""
    by_writer = {(str(e.get("channel")), int(e.get("epoch", -1))): e for e in written}
    by_relay = {(str(e.get("channel")), int(e.get("epoch", -1))): e for e in relayed or ()}
    results = []
    for channel in channels:
        for epoch in range(epochs):
            writer = by_writer.get((channel, epoch))
            relay = by_relay.get((channel, epoch))
            if relayed is not None and relay is None:
                writer = None  # sent into the ring, perhaps, but never given to the reader
            results.append(_epoch(channel, epoch, writer, relay))
    return tuple(results)
