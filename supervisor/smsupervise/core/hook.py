"""The checkpoint hook's contract, one owner for the stop sequence (``stop``) and the debug socket's
on-demand ``checkpoint``: its command line (split into words as a shell would, run without one) and
what its environment adds to the job's."""

from __future__ import annotations


def hook_argv(command: str) -> tuple[str, ...]:
    """``--checkpoint-hook``'s words; no shell runs (``sh -c '...'`` for one)."""
    import shlex  # noqa: PLC0415 - only a run that starts a hook needs it (start-up time counts)

    return tuple(shlex.split(command))


def hook_env(reason: str, deadline: float) -> dict[str, str]:
    """What the hook learns: why it runs (``SIGTERM``, ``CheckpointRequested``, ...) and by when
    (Unix time, whole seconds)."""
    return {"SMSUPERVISE_STOP_REASON": reason, "SMSUPERVISE_DEADLINE": str(int(deadline))}
