"""``RunState`` (core's typed view of the run) as the plain data of the control socket's ``status``
answer: the debug socket's vocabulary lives here, not in core."""

from __future__ import annotations

from smsupervise.core.snapshot import RunState


def status_data(state: RunState) -> dict[str, object]:
    """Step, child, stop, checkpoint settings, stream counts, Pipe channels, keep-alive."""
    child = state.child
    left = state.keep_alive_seconds_left
    return {
        "supervisor": {"pid": state.pid, "uptime_s": round(state.uptime_s, 3)},
        "step": state.step,
        "steps": list(state.steps),
        "child": None
        if child is None
        else {"pid": child.pid, "pgid": child.pgid, "argv": list(child.argv), "cwd": child.cwd},
        "running": state.running,
        "host": state.host,
        "job": state.job,
        "stop": None if state.stop is None else dict(state.stop),
        "checkpoint": state.checkpoint._asdict(),
        "grace_period": state.grace_period,
        "stop_budget": state.stop_budget,
        "streams": {name: counts._asdict() for name, counts in state.streams.items()},
        "pipes": [dict(channel) for channel in state.pipes],
        "keep_alive": None if left is None else {"seconds_left": round(left, 1)},
        **state.services,
    }
