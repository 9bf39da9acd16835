"""What the relay reports about each channel: the per-epoch record (``pipe_epoch_done``) and the live
snapshot (``smsupervise-debug status``). The splice loop (pump.py) only counts; this module turns
the counts into records, so the loop allocates nothing per turn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

INPUT_STARVED = "input-starved"  # waiting on the producer: the child's FIFO has room, nothing is held
TRAINER_BOUND = "trainer-bound"  # waiting on the consumer: data is held or the child's FIFO is full
FAILED = "failed"  # the channel's relay failed (pipe_relay_failed); the job got EOF
STOPPED = "stopped"  # the relay thread has ended
SAMPLE_EVERY = 1.0  # seconds between rate samples (the relay thread wakes at least this often)


class EpochStats(NamedTuple):
    """Per channel and epoch: what moved and where the time went."""

    channel: str
    epoch: int
    bytes: int
    seconds: float  # from the first byte available upstream to EOF delivered
    input_starved_s: float  # the child's FIFO had room and the ring was empty: waiting on upstream
    trainer_bound_s: float  # data was waiting and the child's FIFO was full (or not yet opened)
    wait_open_s: float  # of which: before the child opened the epoch's FIFO
    ended: str  # "eof", "child closed", "stopped"
    ring_bytes: int  # the ring's capacity
    ring_peak: int  # the most it held
    cpu_s: float  # the relay thread's CPU time for the epoch (it serves every channel)
    feeder_cpu_s: float  # this channel's feeder thread's (the direct path, feeder.py)


class RelayFailed(NamedTuple):
    """A channel's relay failed (``pipe_relay_failed``): the job's FIFO was turned into EOF first."""

    channel: str
    epoch: int
    error: str  # "TypeName: message"
    path: str | None  # the file the error was about, if it names one
    fifo: str | None  # the job's FIFO of the epoch, if one was open
    eof_error: str | None = None  # if even the EOF could not be given


RelayEvent = EpochStats | RelayFailed  # what the relay's threads report, typed (never a name to match)


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    """One channel right now, as the debug service shows it."""

    channel: str
    epoch: int  # the epoch being relayed (or waited for)
    epoch_bytes: int  # delivered to the job in this epoch so far
    bytes: int  # delivered to the job in every epoch so far
    mb_per_s: float  # delivered over the last rate sample (about the last second); 1 MB = 1e6 B
    state: str  # INPUT_STARVED, TRAINER_BOUND, FAILED or STOPPED
    ring_held: int  # bytes read ahead and not yet delivered

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Sample:
    """Two rate samples of a channel's delivered bytes, taken by the relay thread about
    ``SAMPLE_EVERY`` apart; replaced whole (one attribute store), so a reader never sees half."""

    before_at: float
    before_bytes: int
    at: float
    bytes: int

    def next(self, now: float, delivered: int) -> Sample:
        return Sample(self.at, self.bytes, now, delivered)

    def mb_per_s(self, now: float) -> float:
        """MB/s between the two samples; 0 once the newer one is stale (the thread stopped sampling)."""
        span = self.at - self.before_at
        if span <= 0 or now - self.at > 2 * SAMPLE_EVERY:
            return 0.0
        return round((self.bytes - self.before_bytes) / span / 1e6, 3)


def first_sample(now: float) -> Sample:
    return Sample(now, 0, now, 0)
