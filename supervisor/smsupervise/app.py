"""The composition root: a synchronous prelude, one event loop, a synchronous epilogue."""

from __future__ import annotations

import os

from smsupervise import launch, libc
from smsupervise.cli import Invocation
from smsupervise.errors import SupervisorError
from smsupervise.logs import EventLog
from smsupervise.signals import SignalInbox
from smsupervise.status import ExitCode
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


def run(invocation: Invocation, inbox: SignalInbox) -> int:
    """Run the invocation to the end; returns smsupervise's exit code."""
    settings = invocation.settings
    log = EventLog(settings.log_format if settings.log_format == "text" else "json", settings.log_level)
    try:
        spec = launch.resolve(invocation, os.environ)
        become_reaper(log)
        if settings.log_format == "json":
            libc.keep_heap()
        outcome = _run_loop(Supervisor(spec, settings, inbox, log),
                            os.environ.get("SMSUPERVISE_EVENT_LOOP", "uvloop"))
    except SupervisorError as error:
        log.error("start_failed", error=error.message(), exit_code=error.exit_code)
        log.info("exiting", exit_code=error.exit_code)
        return error.exit_code
    code = outcome.exit_code if 0 <= outcome.exit_code <= 255 else int(ExitCode.SOFTWARE)
    times = os.times()
    log.info("exiting", exit_code=code, runtime_s=round(outcome.runtime, 3),
             cpu_s=round(times.user + times.system, 3))
    return code
