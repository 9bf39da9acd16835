"""The failure class: what a failure is about, as one machine-readable word beside the text, so
dashboards and retries can act on it (``failure_written``/``exiting`` events, ``status``, the
``diagnosis.json`` file beside the failure file). Decided on typed facts, first cause first.
"""

from __future__ import annotations

import enum

from smsupervise.core.spawn import StepKind
from smsupervise.core.stopfacts import MAX_RUNTIME_REASON
from smsupervise.core.supervise import Outcome
from smsupervise.diagnose import disks
from smsupervise.diagnose.exithang import EXIT_HANG_REASON
from smsupervise.diagnose.facts import Diagnosis

FULL = 0.99  # the share of a filesystem used (at its peak) from which it counts as full


class FailureClass(enum.Enum):
    """What a failed run's reason is about (the values are what the files and events carry)."""

    OUT_OF_MEMORY = "OutOfMemory"  # the kernel's OOM killer killed a process of the job
    SHARED_MEMORY = "SharedMemory"  # a bus error with /dev/shm full (DataLoader workers)
    DISK_FULL = "DiskFull"  # ENOSPC in the job's last lines
    STALLED = "Stalled"  # no progress within --stall-timeout (the progress watchdog)
    EXIT_HANG = "ExitHang"  # a rank ended, the launcher did not (the exit-hang guard, --exit-hang-fails)
    MAX_RUNTIME = "MaxRuntime"  # --max-runtime ended it
    STOPPED = "Stopped"  # a stop signal (SIGTERM, SIGINT) ended it
    PREPARATION = "Preparation"  # a step before training (requirements.txt) failed
    PIPE_RELAY = "PipeRelay"  # a Pipe-mode channel's relay failed
    SIGNAL = "Signal"  # the job died of a signal nothing above explains
    EXIT_CODE = "ExitCode"  # the job exited non-zero
    CONFIG = "Config"  # smsupervise could not start the job (options, configuration, program)


_BY_STOP = {MAX_RUNTIME_REASON: FailureClass.MAX_RUNTIME, EXIT_HANG_REASON: FailureClass.EXIT_HANG}


def classify(outcome: Outcome, diagnosis: Diagnosis) -> FailureClass | None:
    """The class of a run's failure; None when it did not fail (exit 0, not stopped)."""
    status = outcome.status
    failed = status is None or not status.ok or outcome.stop is not None or bool(outcome.relay_failures)
    if not failed:
        return None
    return _resource(diagnosis) or _how(outcome)


def _resource(diagnosis: Diagnosis) -> FailureClass | None:
    """A resource the kernel ran out of, first: memory, then /dev/shm, then a disk."""
    if diagnosis.oom:
        return FailureClass.OUT_OF_MEMORY
    shm = diagnosis.shm
    if diagnosis.bus_error and shm is not None and shm.peak_used >= FULL:
        return FailureClass.SHARED_MEMORY
    full = diagnosis.full
    if diagnosis.enospc:
        on_shm = full is not None and disks.SHM in full.fs.paths and full.fs.peak_used >= FULL
        return FailureClass.SHARED_MEMORY if on_shm else FailureClass.DISK_FULL
    return None


def _how(outcome: Outcome) -> FailureClass:
    """How the run ended, when no resource explains it."""
    status = outcome.status
    if outcome.stop is not None:
        return _BY_STOP.get(outcome.stop.reason, FailureClass.STOPPED)
    if outcome.relay_failures:
        return FailureClass.PIPE_RELAY
    if outcome.step.kind is StepKind.PREPARE:
        return FailureClass.PREPARATION
    if status is not None and status.signal is not None:
        return FailureClass.SIGNAL
    return FailureClass.EXIT_CODE
