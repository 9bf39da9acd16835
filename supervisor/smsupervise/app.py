"""The composition root: a synchronous prelude, one event loop, a synchronous epilogue."""

from __future__ import annotations

import os
import time

from smsupervise import failure, launch, libc
from smsupervise.cli import Invocation
from smsupervise.errors import ConfigError, SupervisorError
from smsupervise.logs import EventLog
from smsupervise.signals import SignalInbox
from smsupervise.status import ExitCode, signal_name
from smsupervise.supervise import Outcome, Supervisor


def become_reaper(log: EventLog) -> None:
    """As PID 1 we reap by nature; otherwise ask to be a child subreaper, and say so once."""
    if os.getpid() == 1:
        return
    error = libc.set_child_subreaper()
    if error is None:
        log.info("subreaper_enabled", reason="not PID 1: orphaned descendants are re-parented to "
                 "smsupervise, which reaps them and stops them when the child exits")
        return
    log.warning("subreaper_failed", error=error,
                impact="orphaned descendants will be re-parented to another process: smsupervise "
                "cannot reap them or stop them when the child exits",
                fix="run smsupervise as PID 1 (ENTRYPOINT [\"smsupervise\"]) or on a kernel >= 3.4")


def _run_loop(supervisor: Supervisor, loop_name: str) -> Outcome:
    if loop_name == "asyncio":
        import asyncio  # noqa: PLC0415

        return asyncio.run(supervisor.run())
    import uvloop  # noqa: PLC0415

    return uvloop.run(supervisor.run())


def failure_text(outcome: Outcome) -> str:
    """The reason a person reads in the console: what happened first, then the evidence."""
    if outcome.status is None:
        assert outcome.stop_signal is not None
        headline = f"Stopped by {signal_name(outcome.stop_signal)} before {outcome.step} started"
    elif outcome.step != "training":
        headline = failure.describe(outcome.status, what=outcome.step[:1].upper() + outcome.step[1:])
        headline += "; training did not start"
    else:
        headline = failure.describe(outcome.status)
        if outcome.stop_signal is not None:
            stopped = f"Stopped by {signal_name(outcome.stop_signal)}; "
            headline = stopped + headline[:1].lower() + headline[1:]
            if outcome.killed_after_grace:
                headline += " after the grace period"
    return failure.compose(headline, outcome.stderr_tail)


def _record_outcome(plan: launch.Plan, outcome: Outcome, log: EventLog, run_started: float) -> None:
    if plan.outcome_dir is None:
        return
    try:
        for path in failure.clear_stale(plan.outcome_dir, run_started):
            log.info("stale_outcome_removed", path=path, reason="left over from an earlier run in this tree")
        if outcome.status is not None and outcome.status.ok and outcome.step == "training":
            failure.write_success(plan.outcome_dir)
            return
        text = failure_text(outcome)
        if failure.write_failure(plan.outcome_dir, text):
            log.info("failure_written", path=os.path.join(plan.outcome_dir, "failure"), reason=text[:200])
        else:
            log.info("failure_kept", path=os.path.join(plan.outcome_dir, "failure"),
                     reason="the program wrote its own failure file; its words win")
    except OSError as error:
        log.error("outcome_not_written", dir=plan.outcome_dir, error=str(error))


def run(invocation: Invocation, inbox: SignalInbox) -> int:
    """Run the invocation to the end; returns smsupervise's exit code."""
    settings = invocation.settings
    run_started = time.time() - 1.0  # mtimes are coarse on some filesystems: a second of slack
    log = EventLog(settings.log_format if settings.log_format == "text" else "json", settings.log_level)
    try:
        become_reaper(log)
        plan = launch.plan(invocation, os.environ)
        for event, fields in plan.notes:
            (log.warning if "impact" in fields else log.info)(event, **fields)
        if settings.log_format == "json":
            libc.keep_heap()
        outcome = _run_loop(Supervisor(plan.steps, settings, inbox, log),
                            os.environ.get("SMSUPERVISE_EVENT_LOOP", "uvloop"))
    except SupervisorError as error:
        log.error("start_failed", error=error.message(), exit_code=error.exit_code)
        if invocation.mode == "train" and isinstance(error, ConfigError | SupervisorError):
            base = launch.base_dir(settings, os.environ)
            output_dir = os.path.join(base, "output")
            if os.path.isdir(base):
                try:
                    failure.clear_stale(output_dir, run_started)
                    failure.write_failure(output_dir, f"Not started: {error.message()}")
                except OSError as write_error:
                    log.error("outcome_not_written", dir=output_dir, error=str(write_error))
        log.info("exiting", exit_code=error.exit_code)
        return error.exit_code
    _record_outcome(plan, outcome, log, run_started)
    code = outcome.exit_code if 0 <= outcome.exit_code <= 255 else int(ExitCode.SOFTWARE)
    times = os.times()
    log.info("exiting", exit_code=code, runtime_s=round(outcome.runtime, 3),
             cpu_s=round(times.user + times.system, 3))
    return code
