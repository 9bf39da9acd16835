"""The supervisor's state as plain data, for the debug socket's ``status``: cheap, read-only, no
/proc reads (the leftovers' rows are the service's), safe to build on every request.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from smsupervise.core.status import signal_name

if TYPE_CHECKING:
    from smsupervise.core.supervise import Supervisor


def describe(sup: Supervisor) -> dict[str, object]:
    """Step, child, stop, checkpoint settings, stream counts, Pipe channels, keep-alive."""
    now = time.monotonic()
    step = sup.steps[sup.step_index]
    stop: dict[str, object] | None = sup.stop.snapshot() if sup.stop is not None else None
    if stop is None and sup.stop_signal is not None:
        stop = {"reason": sup.stop_reason, "phase": "before start"}
    left = sup.keep_alive.seconds_left(now)
    settings = sup.settings
    child = sup.child
    return {
        "supervisor": {"pid": os.getpid(), "uptime_s": round(now - sup.started, 3)},
        "step": step.label,
        "steps": [s.label for s in sup.steps],
        "child": None
        if child is None
        else {"pid": child.pid, "pgid": child.pgid, "argv": list(child.argv), "cwd": step.spec.cwd},
        "running": sup.job_running(),
        "host": step.spec.env.get("SM_CURRENT_HOST"),
        "job": step.spec.env.get("TRAINING_JOB_NAME"),
        "stop": stop,
        "checkpoint": {
            "hook": settings.checkpoint_hook,
            "signal": signal_name(settings.checkpoint_signal) if settings.checkpoint_signal else None,
            "timeout": settings.checkpoint_timeout if settings.checkpointing else None,
        },
        "grace_period": settings.grace_period,
        "stop_budget": settings.stop_budget,
        "streams": {name: _stream_counts(sup, name) for name in ("stdout", "stderr")},
        "pipes": sup.pipes.snapshot(),
        "keep_alive": None if left is None else {"seconds_left": round(left, 1)},
        **_services(sup),
    }


def _services(sup: Supervisor) -> dict[str, object]:
    """What the services with a state to show say (their ``status()``: serve/'s front, --also)."""
    found: dict[str, object] = {}
    for service in sup.services:
        status = getattr(service, "status", None)
        if callable(status):
            found.update(status())
    return found


def _stream_counts(sup: Supervisor, name: str) -> dict[str, int]:
    """Records and bytes relayed for one of the child's streams, and what of them our output
    dropped (its reader went away: EPIPE)."""
    lost = [output.lost.get(name, (0, 0)) for output in sup.outputs.values()]
    return {
        "records": sup.recent.records[name],
        "bytes": sup.recent.bytes[name],
        "dropped_records": sum(records for records, _ in lost),
        "dropped_bytes": sum(size for _, size in lost),
    }
