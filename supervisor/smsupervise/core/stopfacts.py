"""What a stop did, as typed facts: how the checkpoint step ended, why SIGKILL was sent, the
figures it ran with. ``stop.StopSequence`` records them; ``sagemaker.outcome`` words them for the
failure file and the ``exiting`` event.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from smsupervise.core.status import ExitStatus

MAX_RUNTIME_REASON = "MaxRuntimeExceeded"


class CheckpointHow(enum.Enum):
    """How the checkpoint step ended."""

    HOOK_EXITED = "hook exited"
    ACKNOWLEDGED = "acknowledged"
    CHILD_EXITED = "child exited"
    SECOND_SIGNAL = "second stop signal"
    TIMEOUT = "timeout"
    HOOK_NOT_STARTED = "hook could not start"

    @property
    def ok(self) -> bool:
        return self in (CheckpointHow.HOOK_EXITED, CheckpointHow.ACKNOWLEDGED)


class CheckpointResult(NamedTuple):
    """What the checkpoint step did: facts, with the figures it ran with. ``outcome`` words them."""

    how: CheckpointHow
    seconds: float  # from the start of the checkpoint step to its end
    timeout: float  # the --checkpoint-timeout it ran with
    hook_status: ExitStatus | None = None  # the hook's exit, when it exited during the step
    hook_error: str | None = None  # why the hook could not start
    hook_finished_after: float | None = None  # a hook that outlived the child: its end, from the request


class KillCause(enum.Enum):
    """Why SIGKILL went to the group."""

    GRACE_EXPIRED = "grace expired"
    SECOND_SIGNAL = "second stop signal"


class StopReport(NamedTuple):
    """What the stop did, for the failure file and the ``exiting`` event: facts and the figures."""

    reason: str  # "SIGTERM", "SIGINT" or "MaxRuntimeExceeded"
    after: float  # seconds from smsupervise's start (its process start time) to the stop request
    checkpoint: CheckpointResult | None
    exit_after_term: float | None  # seconds from the stop signal to the child's exit
    killed: KillCause | None  # why SIGKILL was sent; None: it was not
    grace: float  # the --grace-period it ran with
    max_runtime: float | None  # the --max-runtime it ran with
