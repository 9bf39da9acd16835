"""The one place that puts what happened into words, and the atomic outcome files."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from smsupervise.core.spawn import LaunchSpec, Step, StepKind
from smsupervise.core.status import ExitStatus
from smsupervise.core.stopfacts import CheckpointHow, CheckpointResult, KillCause, StopReport
from smsupervise.core.supervise import Outcome
from smsupervise.sagemaker import outcome

TRAINING = Step(StepKind.MAIN, "training", LaunchSpec(("python3",), {}))
PIP = Step(StepKind.PREPARE, "installing requirements.txt", LaunchSpec(("pip",), {}))
COMMAND = Step(StepKind.MAIN, "command", LaunchSpec(("true",), {}))
KILLED = ExitStatus(signal=int(signal.SIGKILL))


def _stop(killed: KillCause | None, checkpoint: CheckpointResult | None = None) -> StopReport:
    return StopReport("SIGTERM", 12.0, checkpoint, None, killed, 30.0, None)


@pytest.mark.parametrize(
    ("tail", "line"),
    [
        ('Traceback (most recent call last):\n  File "x", line 1\nException: boom', "Exception: boom"),
        ('Traceback (most recent call last):\n  File "x", line 1\nStopIteration', "StopIteration"),
        ("Traceback (most recent call last):\n  File \"x\"\nKeyError: 'k'", "KeyError: 'k'"),
        (
            'Traceback (most recent call last):\n  File "a"\nValueError: first\n\nDuring handling of the '
            'above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File "b"\n'
            "    raise RuntimeError('second')\n    ^^^^^\nRuntimeError: second",
            "RuntimeError: second",
        ),
        (
            'Traceback (most recent call last):\n  File "x"\ntorch.cuda.OutOfMemoryError: CUDA',
            "torch.cuda.OutOfMemoryError: CUDA",
        ),
    ],
)
def test_the_exception_line_of_the_last_traceback(tail: str, line: str) -> None:
    """Bare Exception, StopIteration, dotted names and chained tracebacks all give their line."""
    assert outcome.exception_line(tail) == line


def test_no_traceback_no_exception_line() -> None:
    """The twin: output without a traceback has no exception line."""
    assert outcome.exception_line("Error: something\nValueError: not in a traceback") is None


def test_grace_wording_only_when_the_grace_really_expired() -> None:
    """'did not exit within the grace period' after the grace; a second SIGTERM is named as such."""
    expired = outcome.describe_stop(_stop(KillCause.GRACE_EXPIRED), KILLED, "Training")
    assert "did not exit within the 30 s grace period and was SIGKILLed (exit 137)" in expired
    early = outcome.describe_stop(_stop(KillCause.SECOND_SIGNAL), KILLED, "Training")
    assert "grace period and was SIGKILLed" not in early
    assert "SIGKILLed on a second stop signal before its 30 s grace period ended" in early


def test_training_did_not_start_only_after_a_preparation_step() -> None:
    """A failing pip step says training did not start; a failing command or training never does."""
    failed = ExitStatus(code=1)
    pip = outcome.headline(Outcome(failed, 1, None, 1.0, PIP))
    assert pip == "Installing requirements.txt exited with code 1; training did not start"
    for step in (TRAINING, COMMAND):
        assert "did not start" not in outcome.headline(Outcome(failed, 1, None, 1.0, step))


def test_the_checkpoint_facts_are_worded_once() -> None:
    """Each way a checkpoint step ends has its own words, with the figures it ran with."""
    hook = CheckpointResult(CheckpointHow.HOOK_EXITED, 4.25, 60.0, ExitStatus(code=0))
    assert outcome.describe_checkpoint(hook) == "checkpoint hook finished in 4.2 s (exit 0)"
    timeout = CheckpointResult(CheckpointHow.TIMEOUT, 60.0, 45.0)
    assert outcome.describe_checkpoint(timeout) == "checkpoint not done within --checkpoint-timeout 45 s"
    failed = CheckpointResult(
        CheckpointHow.HOOK_NOT_STARTED, 0.0, 60.0, hook_error="nosuch: command not found"
    )
    assert outcome.describe_checkpoint(failed) == "checkpoint hook could not start: nosuch: command not found"


def test_compose_keeps_the_limit_and_the_newest_stderr() -> None:
    """The failure text never exceeds 1024 characters and keeps the end of the stderr tail."""
    tail = ("x" * 50 + "\n") * 100 + "the last line"
    text = outcome.compose("Training exited with code 1", tail.encode())
    assert len(text) <= outcome.LIMIT
    assert text.startswith("Training exited with code 1.\nLast stderr:\n")
    assert text.endswith("the last line")


def test_a_failure_file_is_written_whole_and_never_over_the_programs_own(tmp_path: Path) -> None:
    """Written atomically (no temporary left), and a failure file the program wrote wins."""
    assert outcome.write_failure(str(tmp_path), "why").written
    assert (tmp_path / "failure").read_text() == "why"
    assert os.listdir(tmp_path) == ["failure"]
    assert not outcome.write_failure(str(tmp_path), "ours").written
    assert (tmp_path / "failure").read_text() == "why"


def test_a_failure_path_that_is_a_directory_is_reported_as_such(tmp_path: Path) -> None:
    """A `failure` directory is a problem to report, not 'the program wrote its own failure file'."""
    (tmp_path / "failure").mkdir()
    written = outcome.write_failure(str(tmp_path), "why")
    assert not written.written
    assert written.problem is not None
    assert "is a directory" in written.problem


def test_success_is_earned_only_by_an_unstopped_main_step() -> None:
    """Only a clean MAIN exit without a stop writes success; a stopped or preparation exit does not."""
    ok = ExitStatus(code=0)
    assert outcome.finished(Outcome(ok, 0, None, 1.0, TRAINING))
    assert not outcome.finished(Outcome(ok, 0, _stop(None), 1.0, TRAINING))
    assert not outcome.finished(Outcome(ok, 0, None, 1.0, PIP))
    assert not outcome.finished(Outcome(ExitStatus(code=3), 3, None, 1.0, TRAINING))


def test_a_failed_pipe_channel_is_named_and_denies_success() -> None:
    """A relay failure is worded with its channel, epoch and cause, and the run is no success even
    though the job exited 0 (it read an early EOF, not its data)."""
    from smsupervise.core.relaylink import RelayFailure

    failed = (RelayFailure("train", 2, "PermissionError: [Errno 13] denied"),)
    result = Outcome(ExitStatus(code=0), 0, None, 1.0, TRAINING, b"", failed)
    assert outcome.headline(result) == (
        "Training exited with code 0; the Pipe relay of channel 'train' failed in epoch 2: "
        "PermissionError: [Errno 13] denied"
    )
    assert not outcome.finished(result)
