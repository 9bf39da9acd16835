"""The supervisor's state as typed, immutable data (``RunState``), for whoever shows it (the debug
socket's ``status`` renders it in ``debug/statusview.py``). Cheap to build on every request: no /proc
reads (the leftovers' rows are the debug service's). Built by ``Supervisor.state()`` from its own fields,
so this module knows nothing of the supervisor (no import circle, and core does not decide how its state
is shown).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple


class ChildView(NamedTuple):
    """The current step's process."""

    pid: int
    pgid: int
    argv: tuple[str, ...]
    cwd: str | None


class StreamCounts(NamedTuple):
    """Records and bytes relayed for one of the child's streams, and what our output dropped of them
    (its reader went away: EPIPE)."""

    records: int
    bytes: int
    dropped_records: int
    dropped_bytes: int


class CheckpointView(NamedTuple):
    """The checkpoint step as configured."""

    hook: str | None
    signal: str | None
    timeout: float | None


class RunState(NamedTuple):
    """One look at the run: the step, its child, the stop, the settings that bound it, the streams,
    the Pipe channels and the keep-alive."""

    pid: int
    uptime_s: float
    step: str
    steps: tuple[str, ...]
    child: ChildView | None
    running: bool
    host: str | None
    job: str | None
    stop: Mapping[str, object] | None  # the stop sequence's own snapshot, or "before start"
    checkpoint: CheckpointView
    grace_period: float
    stop_budget: float
    streams: Mapping[str, StreamCounts]
    pipes: tuple[Mapping[str, object], ...]
    keep_alive_seconds_left: float | None
    services: Mapping[str, object] = {}  # what the services show of themselves (serve_front, processes)
