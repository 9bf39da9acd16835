"""The Pipe-mode relay as the supervisor sees it: started before any step, its threads' events
logged on the loop, its failures kept for the outcome, its channels' snapshot for the debug socket.
The relay itself (threads, splices, rings) is pipemode's; it is imported only with --pipe-relay.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, NamedTuple

from smsupervise.streams.events import EventLog

if TYPE_CHECKING:
    from smsupervise.pipemode.channel import ChannelSpec
    from smsupervise.pipemode.meter import RelayEvent
    from smsupervise.pipemode.relay import PipeRelay


class RelayFailure(NamedTuple):
    """A Pipe channel whose relay failed: which one, in which epoch, and why (the event's facts)."""

    channel: str
    epoch: int
    error: str


class RelayLink:
    """One run's relay: ``start`` on the loop before the first step, ``stop`` after the last."""

    def __init__(self, channels: tuple[ChannelSpec, ...], log: EventLog) -> None:
        self.channels = channels
        self.log = log
        self.relay: PipeRelay | None = None
        self.failures: list[RelayFailure] = []

    def start(self, loop: asyncio.AbstractEventLoop, wake: int) -> None:
        """Start the relay's threads (read-ahead begins at once) and say what each ring got;
        ``wake`` is the signal that recalls a feeder (``core.signals.thread_wake``)."""

        def emit(event: RelayEvent) -> None:  # on a relay thread
            loop.call_soon_threadsafe(self._on_event, event)

        from smsupervise.pipemode.relay import PipeRelay  # noqa: PLC0415 - only with --pipe-relay

        self.relay = PipeRelay(self.channels, emit, wake=wake)
        self.relay.start()
        self.log.info(
            "pipe_relay_started",
            channels=[spec.name for spec in self.channels],
            relay_dir=self.channels[0].relay_dir,
            upstream_dir=self.channels[0].upstream_dir,
            **self.relay.describe(),  # ring_bytes asked, rings (what each got), pipe_budget
        )

    def snapshot(self) -> list[dict[str, object]]:
        """Per channel: the relay's snapshot (epoch, bytes, MB/s, input-starved or trainer-bound),
        or only the name before the relay has started."""
        if self.relay is None:
            return [{"channel": spec.name} for spec in self.channels]
        return [snap.as_dict() for snap in self.relay.snapshot()]

    def stop(self) -> None:
        """Stop the relay; it removes what it created (its FIFOs, and its dir if it made it)."""
        if self.relay is not None:
            self.relay.stop()

    def _on_event(self, event: RelayEvent) -> None:
        from smsupervise.pipemode.meter import EpochStats  # noqa: PLC0415 - only with --pipe-relay

        if isinstance(event, EpochStats):
            rate = round(event.bytes / event.seconds / 1e6, 1) if event.seconds > 0 else None
            self.log.info("pipe_epoch_done", **event._asdict(), mb_per_s=rate)
            return
        fields = {k: v for k, v in event._asdict().items() if k != "eof_error" or v is not None}
        self.log.error("pipe_relay_failed", **fields)
        self.failures.append(RelayFailure(event.channel, event.epoch, event.error))
