"""The diagnosis wing as the composition root plugs it in: the sampler (a ``Service``) and, once
the run has an outcome, the ``Diagnosis`` and the failure class, computed once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from smsupervise.core.supervise import Outcome
from smsupervise.diagnose import disks
from smsupervise.diagnose.facts import Diagnosis
from smsupervise.diagnose.failureclass import FailureClass, classify
from smsupervise.diagnose.sampler import Sampler
from smsupervise.streams.events import EventLog


class Doctor:
    """Samples the job while it runs; concludes once when the outcome is known."""

    def __init__(
        self,
        log: EventLog,
        *,
        interval: float,
        base_dir: str,
        code_dir: str | None,
        host: str | None,
        main: Callable[[], int | None],
        skip: Callable[[], Collection[int]],
    ) -> None:
        self.host = host
        paths = disks.job_paths(base_dir, code_dir)
        self.sampler = Sampler(log, interval, paths, skip=skip, host=host, main=main)
        self.diagnosis: Diagnosis | None = None
        self.failure_class: FailureClass | None = None

    # -- Service (the sampler's) ----------------------------------------------------------------
    def start(self) -> None:
        self.sampler.start()

    def close(self) -> None:
        self.sampler.close()

    def snapshot(self) -> dict[str, Any]:
        """For ``smsupervise-debug status``: the sampler's last view, and the class once known."""
        found = self.sampler.snapshot()
        found["failure_class"] = None if self.failure_class is None else self.failure_class.value
        return found

    def failure_class_name(self) -> str | None:
        """The class's value ("OutOfMemory", ...), once concluded and failed; else None."""
        return None if self.failure_class is None else self.failure_class.value

    def conclude(self, outcome: Outcome) -> tuple[Diagnosis, FailureClass | None]:
        """The diagnosis of the run and its failure class (computed at the first call, for the
        job's own outcome)."""
        if self.diagnosis is None:  # a cluster's verdict may rewrite the outcome later: the job's own
            self.diagnosis = self.sampler.conclude(outcome.status, outcome.stderr_tail)
            self.failure_class = classify(outcome, self.diagnosis)
        return self.diagnosis, self.failure_class
