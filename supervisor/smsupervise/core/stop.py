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
import enum
import os
import signal
import time
from collections.abc import Callable, Mapping

from smsupervise.core.fdreserve import FdReserve
from smsupervise.core.plugins import Drain
from smsupervise.core.reaper import Reaper
from smsupervise.core.siblings import Sibling
from smsupervise.core.spawn import Child, LaunchSpec, resume_group, send_to_group, spawn
from smsupervise.core.status import ExitStatus, signal_name
from smsupervise.core.stopfacts import CheckpointHow, CheckpointResult, KillCause, StopReport
from smsupervise.errors import SpawnError
from smsupervise.linux import proctree
from smsupervise.settings import Settings
from smsupervise.streams.childpipes import ChildOutput
from smsupervise.streams.events import EventLog

# After its ranks are gone, how long a launcher may take to end by itself: torchrun then waits in an
# exit barrier for the other hosts' launchers, whose ranks may still be saving on a loaded machine;
# signalling the master's launcher closes the store under them and fails their clean ends.
AGENT_SETTLE = 30.0
RANKS_POLL = 0.05  # how often the launcher's ranks are looked for after the stop signal (not our children)
ACK_POLL = 0.02  # how often the acknowledgement file is looked for


class Phase(enum.Enum):
    """Where a stop is: each phase is one method of ``StopSequence``."""

    DRAIN = "drain"  # a service (serve/'s front) drains before the stop signal
    CHECKPOINT = "checkpoint"  # the hook runs and/or the checkpoint signal was sent
    GRACE = "grace"  # the stop signal was sent; waiting for the child to exit
    KILLED = "killed"  # SIGKILL was sent
    DONE = "done"  # the child exited


class StopSequence:
    """One stop of one child. ``begin()`` in the signal's callback; ``settle()`` after the child exits.

    The phases run in order: ``_checkpoint`` (when configured), ``_grace``, ``_kill``; a second
    SIGTERM/SIGINT (``advance_now``) ends the current phase at once.
    """

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
        workers: Callable[[], list[int]] | None = None,
        reserve: FdReserve | None = None,
        adopt: Callable[[], Sibling | None] | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.settings = settings
        self.log = log
        self.reaper = reaper
        self.child = child
        self.signum = signum
        self.reason = reason
        self.run_started = run_started
        self.requested = time.monotonic()
        self.requested_wall = time.time()
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
        self.phase = Phase.CHECKPOINT if self.checkpoint_env is not None else Phase.GRACE
        self.drain = drain
        if drain is not None:
            self.phase = Phase.DRAIN
        self.checkpoint: CheckpointResult | None = None
        self.checkpoint_started: float | None = None
        self.term_sent: float | None = None
        self.child_exited: float | None = None
        self.killed: KillCause | None = None
        # A distributed launcher's ranks (torchrun's start their own sessions): they get the stop
        # signal first, the launcher only once they are gone (its own timeout is 30 s, not ours).
        self.workers = workers
        self.signalled_workers: list[int] = []
        self.agent_wait: asyncio.Task[None] | None = None
        self.reserve = reserve  # fds given back for the hook's spawn (RLIMIT_NOFILE reached)
        self.adopt = adopt  # the on-demand checkpoint hook still running, if any: adopted, not doubled

    @property
    def budget_deadline(self) -> float:
        """When the platform's SIGKILL comes (wall clock): the request plus --stop-budget."""
        return self.requested_wall + self.settings.stop_budget

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
            self._resume(self.child.pgid)
        elif self.checkpoint_env is None and self.drain is None:
            self._send_stop_signal()  # ranks first: see ``workers``
        self.log.info("stop_requested", **fields)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def advance_now(self, signum: int) -> None:
        """A second SIGTERM/SIGINT: on to the next phase at once."""
        self.log.info("stop_advanced", signal=signal_name(signum), phase=self.phase.value)
        self.advance.set()

    def on_child_exit(self) -> None:
        """The child exited: the sequence ends (a checkpoint step in progress ends with it)."""
        self.child_exited = time.monotonic()
        if self.task is not None:
            self.task.cancel()
        if self.agent_wait is not None:
            self.agent_wait.cancel()
        if self.phase is Phase.CHECKPOINT and self.checkpoint is None:
            # The child exited while it was saving (often: it saved and left).
            acked = self.ack_file is not None and os.path.exists(self.ack_file)
            how = CheckpointHow.ACKNOWLEDGED if acked else CheckpointHow.CHILD_EXITED
            self._checkpoint_ended(how)
        self.phase = Phase.DONE

    async def _run(self) -> None:
        if self.drain is not None:
            await self.drain(self.advance)
            self.advance.clear()
        if self.checkpoint_env is not None:
            try:
                await self._checkpoint(self.checkpoint_env)
            except Exception as error:  # whatever failed there, the job gets its TERM
                self.log.error("checkpoint_step_failed", error=repr(error), action="stop signal now")
                if self.checkpoint is None:
                    self._checkpoint_ended(CheckpointHow.HOOK_NOT_STARTED, repr(error))
        if self.checkpoint_env is not None or self.drain is not None:
            self._send_stop_signal()
        await self._grace()
        self._kill()

    async def _grace(self) -> None:
        """Wait ``--grace-period`` for the child to exit (cancelled when it does)."""
        self.phase = Phase.GRACE
        if await self._wait(self.settings.grace_period):
            self.killed = KillCause.SECOND_SIGNAL
        else:
            self.killed = KillCause.GRACE_EXPIRED
            self.log.warning("grace_expired", grace_period=self.settings.grace_period, action="SIGKILL")

    def _kill(self) -> None:
        self.phase = Phase.KILLED
        self.child.send(signal.SIGKILL)
        for pid in self.signalled_workers:
            send_to_group(pid, signal.SIGKILL)

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
        ranks = self.workers() if self.workers is not None else []
        if ranks:
            self.signalled_workers = [pid for pid in ranks if send_to_group(pid, self.signum)]
            target = f"the launcher's ranks: process groups {self.signalled_workers}"
            self.log.info("signal_forwarded", signal=signal_name(self.signum), target=target)
            for pid in self.signalled_workers:
                self._resume(pid)
            self.agent_wait = asyncio.ensure_future(self._signal_agent_after(self.signalled_workers))
        elif self.child.send(self.signum, self.settings.forward_to):
            self._log_sent()
            self._resume(self.child.pgid)

    def _resume(self, pgid: int, after: int | None = None) -> None:
        """A stopped group (SIGSTOP, a forwarded SIGTSTP) holds the signal just sent pending until
        SIGCONT, and would be SIGKILLed at the end of the grace without ever seeing it: resume it."""
        state = resume_group(pgid)
        if state is not None:
            self.log.info(
                "stopped_group_resumed",
                target=f"process group {pgid}",
                after=signal_name(self.signum if after is None else after),
                state=state,
            )

    async def _signal_agent_after(self, ranks: list[int]) -> None:
        """The launcher gets the stop signal once its ranks are gone and it has had ``AGENT_SETTLE``
        to end by itself (torchrun waits in an exit barrier for the other hosts: a signal there
        turns a clean end into exit 1). The end of the grace SIGKILLs it in any case."""
        while any(proctree.alive(pid) for pid in ranks):
            await asyncio.sleep(RANKS_POLL)
        await asyncio.sleep(AGENT_SETTLE)  # cancelled when the launcher exits
        if self.child.send(self.signum, self.settings.forward_to):
            self._log_sent()
            self._resume(self.child.pgid)

    def _log_sent(self) -> None:
        target = self.child.describe(self.settings.forward_to)
        self.log.info("signal_forwarded", signal=signal_name(self.signum), target=target)

    # -- the checkpoint step -------------------------------------------------------------------
    async def _checkpoint(self, env: Mapping[str, str]) -> None:
        """Start the hook and/or send the checkpoint signal, then wait for the first of: the hook's
        exit, the acknowledgement file, a second stop signal, the timeout. A hook that cannot
        start ends the step at once (unless a checkpoint signal is also waiting for its answer)."""
        self.checkpoint_started = time.monotonic()
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(self.advance.wait())]
        hook_error = None
        if self.settings.checkpoint_hook is not None:
            hook_error = self._start_hook(env)
        ack = self._send_checkpoint_signal()
        waits += [f for f in (self.hook_exit, ack) if f is not None]  # type: ignore[misc]
        if len(waits) > 1:
            try:
                await asyncio.wait(
                    waits, timeout=self.settings.checkpoint_timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for future in waits:
                    if future is not self.hook_exit:
                        future.cancel()
        self._checkpoint_ended(self._how(ack, hook_error), hook_error)

    def _how(self, ack: asyncio.Future[object] | None, hook_error: str | None) -> CheckpointHow:
        if self.hook_exit is not None and self.hook_exit.done():
            return CheckpointHow.HOOK_EXITED
        if ack is not None and ack.done() and not ack.cancelled():
            return CheckpointHow.ACKNOWLEDGED
        if self.advance.is_set():
            self.advance.clear()
            return CheckpointHow.SECOND_SIGNAL
        if hook_error is not None and ack is None:
            return CheckpointHow.HOOK_NOT_STARTED
        return CheckpointHow.TIMEOUT

    def _checkpoint_ended(self, how: CheckpointHow, hook_error: str | None = None) -> None:
        started = self.checkpoint_started if self.checkpoint_started is not None else self.requested
        hook_status = (
            self.hook_exit.result() if self.hook_exit is not None and self.hook_exit.done() else None
        )
        self.checkpoint = CheckpointResult(
            how,
            time.monotonic() - started,
            self.settings.checkpoint_timeout,
            hook_status if how is CheckpointHow.HOOK_EXITED else None,
            hook_error,
        )
        fields: dict[str, object] = {"how": how.value, "seconds": round(self.checkpoint.seconds, 3)}
        if hook_status is not None:
            fields["hook_exit_code"] = hook_status.shell_code()
        (self.log.info if how.ok or how is CheckpointHow.CHILD_EXITED else self.log.warning)(
            "checkpoint_done", **fields
        )
        if how in (CheckpointHow.TIMEOUT, CheckpointHow.SECOND_SIGNAL):
            self._kill_hook(how.value)

    def _send_checkpoint_signal(self) -> asyncio.Future[object] | None:
        """The checkpoint signal to the training group; returns the wait for its acknowledgement."""
        number = self.settings.checkpoint_signal
        if number is None:
            return None
        workers = self.workers() if self.workers is not None else []
        for pid in workers:
            send_to_group(pid, number)
        if self.child.send(number):
            self.log.info(
                "checkpoint_signal_sent",
                signal=signal_name(number),
                target=self.child.describe(),
                ack_file=self.ack_file,
            )
        for pgid in [*workers, self.child.pgid]:
            self._resume(pgid, number)
        return asyncio.ensure_future(_appears(self.ack_file)) if self.ack_file is not None else None

    def _start_hook(self, env: Mapping[str, str]) -> str | None:
        """Start the checkpoint hook, or adopt the one ``smsupervise-debug checkpoint`` started
        (two writers of one checkpoint must never run side by side); returns why it could not
        start, or None. The fd reserve is given back for the spawn: a process at RLIMIT_NOFILE
        still starts its hook; without fds for the hook's pipes, its output goes to ours unframed."""
        adopted = self.adopt() if self.adopt is not None else None
        if adopted is not None:
            self.hook, self.hook_exit = adopted.child, adopted.exit
            self.log.info(
                "checkpoint_hook_adopted",
                pid=adopted.child.pid,
                argv=list(adopted.child.argv),
                why="smsupervise-debug checkpoint started it and it is still running",
            )
            return None
        with self.reserve.released() if self.reserve is not None else contextlib.nullcontext(0):
            # Imported here, with the reserve's fds free: an import opens files too.
            from smsupervise.core.hook import hook_argv, hook_env  # noqa: PLC0415 - a stop with a hook only

            argv = hook_argv(self.settings.checkpoint_hook or "")
            spec = LaunchSpec(argv, {**env, **hook_env(self.reason, self.deadline)}, self.checkpoint_cwd)
            output, (stdout_w, stderr_w) = self._open_hook_output()
            try:
                hook = spawn(spec, stdout_w, stderr_w)
            except SpawnError as error:
                if output is not None:
                    _discard(output)
                self.hook_output = None
                self.log.error("checkpoint_hook_failed", error=error.message(), exit_code=error.exit_code)
                return error.message()
        self.hook_exit = self.reaper.register(hook.pid)  # same callback as the spawn: see reaper.py
        self.hook = hook
        hook.close()  # the hook is reaped by waitpid; its pidfd is not watched
        if output is not None:
            output.start(hook.pid, host=env.get("SM_CURRENT_HOST"), job=env.get("TRAINING_JOB_NAME"))
        self.log.info(
            "checkpoint_hook_started", pid=hook.pid, argv=list(hook.argv), deadline=round(self.deadline, 3)
        )
        return None

    def _open_hook_output(self) -> tuple[ChildOutput | None, tuple[int, int]]:
        """The hook's output pipes and their write ends; with no ChildOutput, or no fd left for the
        pipes, (None, our own fds 1 and 2): its output then goes to ours, unframed."""
        output = self.hook_output
        if output is None:
            return None, (1, 2)
        try:
            return output, output.open()
        except OSError as error:
            _discard(output)
            self.hook_output = None
            self.log.warning(
                "checkpoint_hook_output_direct",
                error=str(error),
                impact="the hook's output goes to smsupervise's stdout and stderr as it is (not framed)",
            )
            return None, (1, 2)

    def _kill_hook(self, why: str) -> None:
        if self.hook is None or self.hook_exit is None or self.hook_exit.done():
            return
        self.hook.send(signal.SIGKILL)
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
                    await asyncio.wait_for(asyncio.shield(self.hook_exit), 5.0)
            result = self.checkpoint
            if self.hook_exit.done() and result is not None and result.how is not CheckpointHow.HOOK_EXITED:
                # The child exited during the checkpoint step; the hook went on and has now ended.
                self.checkpoint = result._replace(
                    hook_status=self.hook_exit.result(),
                    hook_finished_after=time.monotonic() - self.requested,
                )
        if self.hook_output is not None and self.hook is not None:
            await self.hook_output.drain(self.settings.drain_timeout)

    def snapshot(self) -> dict[str, object]:
        """Where the stop is now, for the debug socket: the phase, its deadline, the budget left."""
        now = time.monotonic()
        left: float | None = None
        if self.phase is Phase.CHECKPOINT:
            left = self.deadline - time.time()
        elif self.phase is Phase.GRACE and self.term_sent is not None:
            left = self.term_sent + self.settings.grace_period - now
        return {
            "reason": self.reason,
            "signal": signal_name(self.signum),
            "phase": self.phase.value,
            "seconds_left": None if left is None else round(max(0.0, left), 3),
            "requested_s_ago": round(now - self.requested, 3),
            "budget_left": round(max(0.0, self.budget_deadline - time.time()), 3),
        }

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
            self.checkpoint,
            exit_after,
            self.killed,
            self.settings.grace_period,
            self.settings.max_runtime,
        )


def _discard(output: ChildOutput) -> None:
    """Close the pipes of a hook that never ran (or could not get them all)."""
    output.close_write_ends()
    for stream in output.streams:
        with contextlib.suppress(OSError):
            os.close(stream.read_fd)
    output.streams.clear()


async def _appears(path: str) -> None:
    """Until ``path`` exists (the checkpoint acknowledgement): a poll, there is no inotify in the stdlib."""
    while not os.path.exists(path):
        await asyncio.sleep(ACK_POLL)
