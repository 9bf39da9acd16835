"""The composition root: a synchronous prelude, one event loop, a synchronous epilogue."""

from __future__ import annotations

import os

from smsupervise.cli import Invocation
from smsupervise.core.signals import SignalInbox
from smsupervise.core.status import ExitCode
from smsupervise.core.supervise import Outcome, Supervisor
from smsupervise.errors import SupervisorError
from smsupervise.linux import libc
from smsupervise.sagemaker import outcome as outcome_files
from smsupervise.sagemaker import plan as planning
from smsupervise.settings import Settings
from smsupervise.streams.events import EventLog


def become_reaper(log: EventLog) -> None:
    """As PID 1 we reap by nature; otherwise ask to be a child subreaper, and say so once."""
    if os.getpid() == 1:
        return
    error = libc.set_child_subreaper()
    if error is None:
        log.info(
            "subreaper_enabled",
            reason="not PID 1: orphaned descendants are re-parented to "
            "smsupervise, which reaps them and stops them when the child exits",
        )
        return
    log.warning(
        "subreaper_failed",
        error=error,
        impact="orphaned descendants will be re-parented to another process: smsupervise "
        "cannot reap them or stop them when the child exits",
        fix='run smsupervise as PID 1 (ENTRYPOINT ["smsupervise"]) or on a kernel >= 3.4',
    )


def _run_loop(supervisor: Supervisor, loop_name: str) -> Outcome:
    if loop_name == "asyncio":
        import asyncio  # noqa: PLC0415

        return asyncio.run(supervisor.run())
    import uvloop  # noqa: PLC0415

    return uvloop.run(supervisor.run())


def headline(outcome: Outcome, settings: Settings) -> str:
    """What happened, in one line: the failure file's first line and the ``exiting`` event's ``stop``."""
    step = outcome.step[:1].upper() + outcome.step[1:]
    if outcome.stop is not None:
        headline = outcome_files.describe_stop(
            outcome.stop, outcome.status, step, settings.grace_period, settings.max_runtime
        )
    elif outcome.status is None:
        headline = f"{step} did not start"
    else:
        headline = outcome_files.describe(outcome.status, what=step)
    if outcome.step != "training" and outcome.status is not None:
        headline += "; training did not start"
    return headline


def _record_outcome(plan: planning.Plan, outcome: Outcome, what_happened: str, log: EventLog) -> None:
    if plan.outcome_dir is None:
        return
    try:
        finished = outcome.status is not None and outcome.status.ok and outcome.step == "training"
        if finished and outcome.stop is None:  # a stopped run did not finish, whatever its code
            outcome_files.write_success(plan.outcome_dir)
            return
        text = outcome_files.compose(what_happened, outcome.stderr_tail)
        if outcome_files.write_failure(plan.outcome_dir, text):
            log.info("failure_written", path=os.path.join(plan.outcome_dir, "failure"), reason=text[:200])
        else:
            log.info(
                "failure_kept",
                path=os.path.join(plan.outcome_dir, "failure"),
                reason="the program wrote its own failure file; its words win",
            )
    except OSError as error:
        log.error("outcome_not_written", dir=plan.outcome_dir, error=str(error))


def _clear_stale(output_dir: str, log: EventLog) -> None:
    try:
        removed = outcome_files.clear_stale(output_dir)
    except OSError as error:
        log.error("outcome_not_written", dir=output_dir, error=str(error))
        return
    for path in removed:
        log.info("stale_outcome_removed", path=path, reason="left over from an earlier run in this tree")


def run(invocation: Invocation, inbox: SignalInbox) -> int:
    """Run the invocation to the end; returns smsupervise's exit code."""
    settings = invocation.settings
    log = EventLog(settings.log_format if settings.log_format == "text" else "json", settings.log_level)
    try:
        become_reaper(log)
        plan = planning.plan(invocation, os.environ)
        if plan.outcome_dir is not None:
            _clear_stale(plan.outcome_dir, log)
        for event, fields in plan.notes:
            (log.warning if "impact" in fields else log.info)(event, **fields)
        if settings.log_format == "json":
            libc.keep_heap()
        outcome = _run_loop(
            Supervisor(plan.steps, settings, inbox, log, plan.ack_file, plan.pipes),
            os.environ.get("SMSUPERVISE_EVENT_LOOP", "uvloop"),
        )
    except SupervisorError as error:
        log.error("start_failed", error=error.message(), exit_code=error.exit_code)
        if invocation.mode == "train":
            base = planning.base_dir(settings, os.environ)
            output_dir = os.path.join(base, "output")
            if os.path.isdir(base):
                try:
                    _clear_stale(output_dir, log)
                    outcome_files.write_failure(output_dir, f"Not started: {error.message()}")
                except OSError as write_error:
                    log.error("outcome_not_written", dir=output_dir, error=str(write_error))
        log.info("exiting", exit_code=error.exit_code)
        return error.exit_code
    what_happened = headline(outcome, settings)
    _record_outcome(plan, outcome, what_happened, log)
    code = outcome.exit_code if 0 <= outcome.exit_code <= 255 else int(ExitCode.SOFTWARE)
    times = os.times()
    extra: dict[str, object] = {"stop": what_happened} if outcome.stop is not None else {}
    log.info(
        "exiting",
        exit_code=code,
        runtime_s=round(outcome.runtime, 3),
        cpu_s=round(times.user + times.system, 3),
        **extra,
    )
    return code
