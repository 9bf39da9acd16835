"""The diagnosis wing as the composition root plugs it in: the sampler (a ``Service``), the
exit-hang guard it feeds, and, once the run has an outcome, the ``Diagnosis`` and the failure
class, computed once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from smsupervise.core.supervise import Outcome
from smsupervise.diagnose import disks
from smsupervise.diagnose.exithang import EXIT_HANG_REASON, ExitHangGuard
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
        self.guard: ExitHangGuard | None = None
        self.hang_fails = False

    # -- Service (the sampler's) ----------------------------------------------------------------
    def start(self) -> None:
        self.sampler.start()

    def close(self) -> None:
        self.sampler.close()
        if self.guard is not None:
            self.guard.close()

    def watch_exit(self, guard: ExitHangGuard, *, fails: bool) -> None:
        """Feed the exit-hang guard from the sampler (this host's first rank gone, a new rank)."""
        self.guard, self.hang_fails = guard, fails
        self.sampler.on_rank_left = guard.rank_left
        self.sampler.on_rank_started = guard.rank_started

    def hang_is_success(self, outcome: Outcome) -> bool:
        """The exit-hang guard stopped the job, and an exit hang is a success (the default)."""
        stop = outcome.stop
        hung = self.guard is not None and self.guard.hung
        return hung and not self.hang_fails and stop is not None and stop.reason == EXIT_HANG_REASON

    def snapshot(self) -> dict[str, Any]:
        """For ``smsupervise-debug status``: the sampler's last view, and the class once known."""
        found = self.sampler.snapshot()
        found["failure_class"] = None if self.failure_class is None else self.failure_class.value
        return found

    def status_fields(self) -> dict[str, Any]:
        """Its part of the debug socket's ``status`` (a ``Reports`` service)."""
        return self.snapshot()

    def failure_class_name(self) -> str | None:
        """The class's value ("OutOfMemory", ...), once concluded and failed; else None."""
        return None if self.failure_class is None else self.failure_class.value

    def conclude(self, outcome: Outcome) -> tuple[Diagnosis, FailureClass | None]:
        """The diagnosis of the run and its failure class (computed at the first call, for the
        job's own outcome)."""
        if self.diagnosis is None:  # a cluster's verdict may rewrite the outcome later: the job's own
            self.diagnosis = self.sampler.conclude(outcome.status, outcome.stderr_tail)
            if self.guard is not None and self.guard.hung:
                words = (
                    f"{self.guard.why}, and the job's main process still ran {self.guard.timeout:g} s later"
                )
                self.diagnosis = self.diagnosis._replace(exit_hang=words)
            hung_ok = self.hang_is_success(outcome)
            self.failure_class = None if hung_ok else classify(outcome, self.diagnosis)
        return self.diagnosis, self.failure_class
