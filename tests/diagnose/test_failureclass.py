"""The failure class and the diagnosis's words, on typed facts: every way a run ends maps to one
class, a resource the kernel ran out of wins over the symptom it caused, and a success has none."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsupervise.core.relaylink import RelayFailure
from smsupervise.core.spawn import LaunchSpec, Step, StepKind
from smsupervise.core.status import ExitStatus
from smsupervise.core.stopfacts import MAX_RUNTIME_REASON, KillCause, StopReport
from smsupervise.core.supervise import Outcome
from smsupervise.diagnose.facts import Departure, Diagnosis, FsState, FullFs, OomKill, ProcView, size
from smsupervise.diagnose.failureclass import FailureClass, classify
from smsupervise.sagemaker import outcome as words

MAIN = Step(StepKind.MAIN, "training", LaunchSpec(("train",), {}))
PREPARE = Step(StepKind.PREPARE, "installing requirements.txt", LaunchSpec(("pip",), {}))
NOTHING = Diagnosis(counter="cgroup v1 memory.oom_control")


def _outcome(status: ExitStatus | None, stop: StopReport | None = None, step: Step = MAIN) -> Outcome:
    code = status.shell_code() if status is not None else 143
    return Outcome(status, code, stop, 1.0, step)


def _stop(reason: str = "SIGTERM", killed: KillCause | None = None) -> StopReport:
    return StopReport(reason, 10.0, None, 0.5, killed, 30.0, None)


def _kill(rank: int | None = 3, main: bool = False) -> OomKill:
    view = ProcView(
        812, 7, 61 << 30, "python", 1, rank, rank, 812 if rank is not None else None, 0.0, 61 << 30
    )
    victim = Departure(view, 10.0, 10.6, ExitStatus(signal=signal.SIGKILL), 8, 24 << 30)
    return OomKill(victim, True, "cgroup v2 memory.events", 64 << 30, None, None, main)


def _fs(paths: tuple[str, ...], used: float, device: int = 1) -> FsState:
    size_ = 64 << 20
    free = int(size_ * (1 - used))
    return FsState(paths, paths[0], "tmpfs", device, size_, free, 1000, 900, used)


@pytest.mark.parametrize(
    ("outcome", "diagnosis", "expected"),
    [
        (_outcome(ExitStatus(code=0)), NOTHING, None),
        (_outcome(ExitStatus(code=0)), NOTHING._replace(oom=(_kill(),)), None),  # recovered: no failure
        (_outcome(ExitStatus(code=1)), NOTHING, FailureClass.EXIT_CODE),
        (_outcome(ExitStatus(signal=9)), NOTHING, FailureClass.SIGNAL),
        (_outcome(ExitStatus(code=1)), NOTHING._replace(oom=(_kill(),)), FailureClass.OUT_OF_MEMORY),
        (
            _outcome(ExitStatus(signal=9)),
            NOTHING._replace(oom=(_kill(main=True),)),
            FailureClass.OUT_OF_MEMORY,
        ),
        (_outcome(ExitStatus(code=143), _stop()), NOTHING, FailureClass.STOPPED),
        (
            _outcome(ExitStatus(signal=9), _stop(killed=KillCause.GRACE_EXPIRED)),
            NOTHING,
            FailureClass.STOPPED,
        ),
        (_outcome(ExitStatus(code=143), _stop(MAX_RUNTIME_REASON)), NOTHING, FailureClass.MAX_RUNTIME),
        (_outcome(None, _stop()), NOTHING, FailureClass.STOPPED),
        (_outcome(ExitStatus(code=1), step=PREPARE), NOTHING, FailureClass.PREPARATION),
        (
            _outcome(ExitStatus(code=1)),
            NOTHING._replace(enospc=True, full=FullFs(_fs(("/opt/ml/model",), 1.0), (), None)),
            FailureClass.DISK_FULL,
        ),
        (_outcome(ExitStatus(code=1)), NOTHING._replace(enospc=True), FailureClass.DISK_FULL),
        (
            _outcome(ExitStatus(code=1)),
            NOTHING._replace(enospc=True, full=FullFs(_fs(("/dev/shm",), 1.0), (), None)),
            FailureClass.SHARED_MEMORY,
        ),
        (
            _outcome(ExitStatus(signal=7)),
            NOTHING._replace(bus_error=True, shm=_fs(("/dev/shm",), 1.0)),
            FailureClass.SHARED_MEMORY,
        ),
        (
            _outcome(ExitStatus(signal=7)),
            NOTHING._replace(bus_error=True, shm=_fs(("/dev/shm",), 0.1)),
            FailureClass.SIGNAL,
        ),
    ],
)
def test_each_ending_has_its_class(
    outcome: Outcome, diagnosis: Diagnosis, expected: FailureClass | None
) -> None:
    """The table of endings and classes."""
    assert classify(outcome, diagnosis) is expected


def test_a_pipe_relay_failure_is_its_own_class() -> None:
    """Exit 0 but the Pipe relay failed: not a success, class PipeRelay."""
    failed = _outcome(ExitStatus(code=0))._replace(relay_failures=(RelayFailure("train", 0, "boom"),))
    assert classify(failed, NOTHING) is FailureClass.PIPE_RELAY


@given(
    st.one_of(
        st.builds(ExitStatus, code=st.integers(0, 255)), st.builds(ExitStatus, signal=st.integers(1, 64))
    ),
    st.booleans(),
    st.booleans(),
)
def test_a_class_exactly_when_the_run_did_not_finish(status: ExitStatus, oom: bool, stopped: bool) -> None:
    """Whatever the status: None exactly when the outcome files say success, one class otherwise."""
    outcome = _outcome(status, _stop() if stopped else None)
    diagnosis = NOTHING._replace(oom=(_kill(),) if oom else ())
    assert (classify(outcome, diagnosis) is None) == words.finished(outcome)


def test_the_oom_words_name_the_rank_its_rss_its_workers_and_the_limit() -> None:
    """The sentence the brief asks for, from typed facts."""
    text = words.describe_oom(_kill(), "algo-2")
    assert text.startswith("Rank 3 (algo-2, local rank 3, pid 812) was killed by the OOM killer; ")
    assert "RSS 61.0 GiB at most 0.6 s before" in text
    assert "memory limit 64.0 GiB" in text
    assert "its 8 child processes (DataLoader workers) held 24.0 GiB" in text


def test_a_kill_9_keeps_its_words_and_is_not_called_oom() -> None:
    """The twin: SIGKILL without a counter's move says it was not the OOM killer; with no counter
    to read, the old hint stays (nothing is claimed)."""
    killed = _outcome(ExitStatus(signal=9))
    assert "not by the OOM killer (cgroup v1 memory.oom_control did not move)" in words.explain(
        killed, NOTHING
    )
    assert words.HINTS[9] in words.explain(killed, Diagnosis())
    assert "OOM killer;" in words.explain(killed, NOTHING._replace(oom=(_kill(main=True),)))


def test_a_success_gets_no_diagnosis_sentence() -> None:
    """Even with a kill counted (a worker that was restarted), a finished run's words are the headline."""
    done = _outcome(ExitStatus(code=0))
    assert words.explain(done, NOTHING._replace(oom=(_kill(),))) == words.headline(done)


@given(st.integers(0, 1 << 62))
def test_sizes_read_as_people_write_them(value: int) -> None:
    """Every size is a number and a binary unit, within 1024 of the unit."""
    text = size(value)
    number, unit = text.split(" ")
    assert unit in {"B", "KiB", "MiB", "GiB", "TiB"}
    assert 0 <= float(number) < 1024 or unit == "TiB"
