"""The stop sequence: a checkpoint step, then SIGTERM, the grace period, SIGKILL.

SageMaker SIGKILLs everything 120 s after SIGTERM (30 s for endpoints). The toolkit ignores SIGTERM,
so jobs lose the work since their last checkpoint. Here the stop goes:

1. ``stop_requested``;
2. the checkpoint step, when configured and the main step is running: the hook command starts
   (training keeps running), and/or the checkpoint signal goes to the training process group. It
   ends when the hook exits, the acknowledgement file appears, the child exits, the checkpoint
   timeout expires (a hook still running is SIGKILLed), or a second SIGTERM/SIGINT arrives;
3. the stop signal (SIGTERM, or the SIGINT that was received) to the child's process group;
4. ``--grace-period``; 5. SIGKILL to the group.

Without a checkpoint step, step 3 happens in the signal's own loop callback: stop latency is the
figure ``benchmarks/pid1.py`` measures. ``settings`` has already checked that the whole sequence fits
``--stop-budget``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import time
from collections.abc import Mapping
from typing import NamedTuple

from smsupervise.core.reaper import Reaper
from smsupervise.core.spawn import Child, LaunchSpec, spawn
from smsupervise.core.status import ExitStatus, signal_name
from smsupervise.errors import SpawnError
from smsupervise.settings import Settings
from smsupervise.streams.childpipes import ChildOutput
from smsupervise.streams.events import EventLog

ACK_POLL = 0.02  # how often the acknowledgement file is looked for
MAX_RUNTIME_REASON = "MaxRuntimeExceeded"


class StopReport(NamedTuple):
    """What the stop did, for the failure file and the ``exiting`` event."""

    reason: str  # "SIGTERM", "SIGINT" or "MaxRuntimeExceeded"
    after: float  # seconds from the start of the run to the stop request
    checkpoint: str | None  # what the checkpoint step did, in words
    exit_after_term: float | None  # seconds from that signal to the child's exit
    killed_after_grace: bool


class StopSequence:
    """One stop of one child. ``begin()`` in the signal's callback; ``settle()`` after the child exits."""

    def __init__(
        self,
        settings: Settings,
        log: EventLog,
        reaper: Reaper,
        child: Child,
        *,
        signum: int,
        reason: str,
        run_started: float,
        checkpoint_env: Mapping[str, str] | None,
        checkpoint_cwd: str | None,
        ack_file: str | None,
        hook_output: ChildOutput | None,
    ) -> None:
        self.settings = settings
        self.log = log
        self.reaper = reaper
        self.child = child
        self.signum = signum
        self.reason = reason
        self.run_started = run_started
        self.requested = time.monotonic()
        # checkpoint_env is None for a preparation step (pip): no checkpoint, straight to SIGTERM.
        self.checkpoint_env = checkpoint_env if settings.checkpointing else None
        self.checkpoint_cwd = checkpoint_cwd
        self.ack_file = ack_file
        self.hook_output = hook_output
        self.deadline = time.time() + settings.checkpoint_timeout
        self.advance = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.hook: Child | None = None
        self.hook_exit: asyncio.Future[ExitStatus] | None = None
        self.checkpoint_note: str | None = None
        self.term_sent: float | None = None
        self.child_exited: float | None = None
        self.killed_after_grace = False
        self.in_checkpoint = False

    # -- driving -------------------------------------------------------------------------------
    def begin(self, sent_at: float | None) -> None:
        """Log the request and run the sequence. Without a checkpoint step the caller has already
        sent the stop signal, first thing in the signal's callback (latency), at ``sent_at``."""
        fields: dict[str, object] = {
            "reason": self.reason,
            "signal": signal_name(self.signum),
            "grace_period": self.settings.grace_period,
            "stop_budget": self.settings.stop_budget,
        }
        if self.checkpoint_env is not None:
            fields["checkpoint_timeout"] = self.settings.checkpoint_timeout
            fields["checkpoint_deadline"] = round(self.deadline, 3)
        if sent_at is not None:
            self.term_sent = sent_at
            self._log_sent()
        self.log.info("stop_requested", **fields)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def advance_now(self, signum: int) -> None:
        """A second SIGTERM/SIGINT: on to the next step at once."""
        self.log.info("stop_advanced", signal=signal_name(signum))
        self.advance.set()

    def on_child_exit(self) -> None:
        self.child_exited = time.monotonic()
        if self.task is not None:
            self.task.cancel()
        if self.in_checkpoint:  # the child exited while it was saving (often: it saved and left)
            self.in_checkpoint = False
            elapsed = self.child_exited - self.requested
            if self.ack_file is not None and os.path.exists(self.ack_file):
                how, self.checkpoint_note = "acknowledged", f"checkpoint acknowledged after {elapsed:.1f} s"
            else:
                how = "child exited"
                self.checkpoint_note = f"training exited {elapsed:.1f} s into the checkpoint step"
            self.log.info("checkpoint_done", how=how, seconds=round(elapsed, 3))

    async def _run(self) -> None:
        if self.checkpoint_env is not None:
            await self._checkpoint(self.checkpoint_env)
            self._send_stop_signal()
        if not await self._wait(self.settings.grace_period):
            self.log.warning("grace_expired", grace_period=self.settings.grace_period, action="SIGKILL")
        self.killed_after_grace = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.child.pgid, signal.SIGKILL)

    async def _wait(self, seconds: float) -> bool:
        """Wait ``seconds`` or until a second stop signal; True if it was cut short."""
        try:
            await asyncio.wait_for(self.advance.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        self.advance.clear()
        return True

    def _send_stop_signal(self) -> None:
        self.term_sent = time.monotonic()
        if deliver(self.child, self.signum, self.settings.forward_to):
            self._log_sent()

    def _log_sent(self) -> None:
        target = describe_target(self.child, self.settings.forward_to)
        self.log.info("signal_forwarded", signal=signal_name(self.signum), target=target)

    # -- the checkpoint step -------------------------------------------------------------------
    async def _checkpoint(self, env: Mapping[str, str]) -> None:
        self.in_checkpoint = True
        started = time.monotonic()
        second_signal = asyncio.ensure_future(self.advance.wait())
        ack: asyncio.Future[None] | None = None
        if self.settings.checkpoint_hook is not None:
            self._start_hook(env)
        if self.settings.checkpoint_signal is not None:
            number = self.settings.checkpoint_signal
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pgid, number)
                self.log.info(
                    "checkpoint_signal_sent",
                    signal=signal_name(number),
                    target=f"process group {self.child.pgid}",
                    ack_file=self.ack_file,
                )
            if self.ack_file is not None:
                ack = asyncio.ensure_future(_appears(self.ack_file))
        waits: list[asyncio.Future[object]] = [second_signal]  # type: ignore[list-item]
        waits += [f for f in (self.hook_exit, ack) if f is not None]  # type: ignore[misc]
        try:
            await asyncio.wait(
                waits, timeout=self.settings.checkpoint_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            second_signal.cancel()
            if ack is not None:
                ack.cancel()
        self.in_checkpoint = False
        elapsed = time.monotonic() - started
        if self.hook_exit is not None and self.hook_exit.done():
            words = _status_words(self.hook_exit.result())
            how, self.checkpoint_note = (
                "hook exited",
                f"checkpoint hook finished in {elapsed:.1f} s ({words})",
            )
        elif ack is not None and ack.done() and not ack.cancelled():
            how, self.checkpoint_note = "acknowledged", f"checkpoint acknowledged after {elapsed:.1f} s"
        elif self.advance.is_set():
            self.advance.clear()
            how = "second stop signal"
            self.checkpoint_note = f"checkpoint step cut short after {elapsed:.1f} s by a second stop signal"
        else:
            how = "timeout"
            self.checkpoint_note = (
                f"checkpoint not done within --checkpoint-timeout {self.settings.checkpoint_timeout:g} s"
            )
        fields: dict[str, object] = {"how": how, "seconds": round(elapsed, 3)}
        if self.hook_exit is not None and self.hook_exit.done():
            fields["hook_exit_code"] = self.hook_exit.result().shell_code()
        (self.log.info if how in ("hook exited", "acknowledged") else self.log.warning)(
            "checkpoint_done", **fields
        )
        if how in ("timeout", "second stop signal"):
            self._kill_hook(how)

    def _start_hook(self, env: Mapping[str, str]) -> None:
        command = self.settings.checkpoint_hook or ""
        hook_env = dict(env)
        hook_env["SMSUPERVISE_STOP_REASON"] = self.reason
        hook_env["SMSUPERVISE_DEADLINE"] = str(int(self.deadline))
        spec = LaunchSpec(tuple(shlex.split(command)), hook_env, self.checkpoint_cwd)
        output = self.hook_output
        stdout_w, stderr_w = output.open() if output is not None else (1, 2)
        try:
            hook = spawn(spec, stdout_w, stderr_w)
        except SpawnError as error:
            if output is not None:
                output.close_write_ends()
            self.log.error("checkpoint_hook_failed", error=error.message(), exit_code=error.exit_code)
            self.checkpoint_note = f"checkpoint hook could not start: {error.message()}"
            return
        self.hook_exit = self.reaper.register(hook.pid)  # same callback as the spawn: see reaper.py
        self.hook = hook
        if output is not None:
            output.start(hook.pid, host=env.get("SM_CURRENT_HOST"), job=env.get("TRAINING_JOB_NAME"))
        self.log.info(
            "checkpoint_hook_started", pid=hook.pid, argv=list(hook.argv), deadline=round(self.deadline, 3)
        )

    def _kill_hook(self, why: str) -> None:
        if self.hook is None or self.hook_exit is None or self.hook_exit.done():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.hook.pgid, signal.SIGKILL)
        self.log.warning(
            "checkpoint_hook_killed",
            pid=self.hook.pid,
            why=why,
            checkpoint_timeout=self.settings.checkpoint_timeout,
        )

    async def settle(self) -> None:
        """After the child exits: let a running hook finish by its deadline, then collect its output."""
        if self.hook_exit is not None and not self.hook_exit.done():
            remaining = max(0.0, self.deadline - time.time())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.hook_exit), remaining)
            if not self.hook_exit.done():
                self._kill_hook("timeout")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.hook_exit, 5.0)
            if self.hook_exit.done() and "hook" not in (self.checkpoint_note or ""):
                # The child exited during the checkpoint step; the hook went on and has now ended.
                elapsed = time.monotonic() - self.requested
                words = _status_words(self.hook_exit.result())
                finished = f"checkpoint hook finished {elapsed:.1f} s after the stop request ({words})"
                self.checkpoint_note = "; ".join(filter(None, [self.checkpoint_note, finished]))
        if self.hook_output is not None and self.hook is not None:
            await self.hook_output.drain(self.settings.drain_timeout)

    def report(self) -> StopReport:
        exit_after = None
        if (
            self.term_sent is not None
            and self.child_exited is not None
            and self.child_exited >= self.term_sent
        ):
            exit_after = self.child_exited - self.term_sent
        return StopReport(
            self.reason,
            self.requested - self.run_started,
            self.checkpoint_note,
            exit_after,
            self.killed_after_grace,
        )


def deliver(child: Child, signum: int, forward_to: str) -> bool:
    """Send ``signum`` to the child's process group (or the child alone); False if it is gone."""
    try:
        if forward_to == "group":
            os.killpg(child.pgid, signum)
        else:
            os.kill(child.pid, signum)
    except ProcessLookupError:
        return False
    return True


def describe_target(child: Child, forward_to: str) -> str:
    return f"process group {child.pgid}" if forward_to == "group" else f"pid {child.pid}"


async def _appears(path: str) -> None:
    """Until ``path`` exists (the checkpoint acknowledgement): a poll, there is no inotify in the stdlib."""
    while not os.path.exists(path):
        await asyncio.sleep(ACK_POLL)


def _status_words(status: ExitStatus) -> str:
    if status.signal is not None:
        return f"killed by {signal_name(status.signal)}"
    return f"exit {status.code}"
