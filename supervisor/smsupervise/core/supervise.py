"""The core: start the child, forward signals, run the stop sequence, clean up leftovers.

Everything here runs on the event loop's thread. Waits are fd readiness (the child's pidfd, the
loop's wake-up fd fed by signal handlers) or timers; nothing blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from smsupervise.pipemode.channel import ChannelSpec

from smsupervise.core.fdreserve import FdReserve
from smsupervise.core.keepalive import KeepAlive
from smsupervise.core.leftovers import end_leftovers
from smsupervise.core.plugins import NO_CLUSTER, ClusterHooks, Drain, Drains, Reports, ServiceFactory
from smsupervise.core.reaper import Reaper
from smsupervise.core.relaylink import RelayFailure, RelayLink
from smsupervise.core.siblings import Sibling, Siblings
from smsupervise.core.signals import STOP_SIGNALS, SignalInbox, thread_wake, wake_for
from smsupervise.core.snapshot import CheckpointView, ChildView, RunState, StreamCounts
from smsupervise.core.spawn import Child, LaunchSpec, Step, hand_terminal, spawn
from smsupervise.core.status import ExitCode, ExitStatus, signal_name
from smsupervise.core.stop import StopSequence
from smsupervise.core.stopfacts import MAX_RUNTIME_REASON, StopReport
from smsupervise.linux import proctree
from smsupervise.settings import Settings
from smsupervise.streams.childpipes import ChildOutput
from smsupervise.streams.events import EventLog
from smsupervise.streams.framing import SeqCounter
from smsupervise.streams.recent import Recent
from smsupervise.streams.writer import Output

REAP_TICK = 1.0  # backstop in case a SIGCHLD is coalesced away (tini uses the same 1 s)


class Outcome(NamedTuple):
    """How the supervised run ended; ``exit_code`` is what smsupervise exits with."""

    status: ExitStatus | None  # None: the child never started
    exit_code: int
    stop: StopReport | None  # what the stop sequence did, if there was one
    runtime: float
    step: Step  # the step that ended the run
    stderr_tail: bytes = b""
    relay_failures: tuple[RelayFailure, ...] = ()  # Pipe channels whose relay failed during the run


def _in_turn(drains: list[Drain]) -> Drain | None:
    """The services' drains, one after the other in the order the services were given; None: none."""
    if not drains:
        return None

    async def each(advance: asyncio.Event) -> None:
        for drain in drains:
            await drain(advance)

    return each


class Run(NamedTuple):
    """What one run is, handed to the supervisor whole at construction."""

    steps: tuple[Step, ...]  # preparation steps (pip), then the main one
    ack_file: str | None = None  # SMSUPERVISE_CHECKPOINT_DONE of the main step, if any
    pipes: tuple[ChannelSpec, ...] = ()  # Pipe-mode channels to relay
    terminal: int | None = None  # our controlling terminal: the main step gets it, unframed
    started: float | None = None  # when smsupervise started (monotonic); None: now


class Supervisor:
    """Runs one ``Run`` to completion. Create it with everything it needs and ``await run()`` once.

    What plugs in comes at construction: ``cluster`` (a distributed job's hooks; ``NO_CLUSTER``
    otherwise), ``services`` (factories given this supervisor as their ``JobControl``) and
    ``on_outcome`` (the outcome files, written as soon as the outcome is known)."""

    def __init__(
        self,
        run: Run,
        settings: Settings,
        inbox: SignalInbox,
        log: EventLog,
        *,
        cluster: ClusterHooks = NO_CLUSTER,
        services: Iterable[ServiceFactory] = (),
        on_outcome: Callable[[Outcome], None] | None = None,
        on_reaped: Callable[[int, ExitStatus, int], None] | None = None,
    ) -> None:
        self.steps = run.steps
        self.settings = settings
        self.inbox = inbox
        self.log = log
        self.ack_file = run.ack_file
        self.pipes = RelayLink(run.pipes, log)  # the Pipe-mode relay, started when there are channels
        self.cluster = cluster  # distributed jobs: peers, fail-fast mesh
        self.reaper = Reaper(on_reaped)  # on_reaped: every pid reaped, with its peak RSS (diagnose/)
        self.counter = SeqCounter()
        self.child: Child | None = None
        self.step_index = 0
        self.stop_signal: int | None = None
        self.stop_reason: str | None = None
        self.external_stops = 0  # SIGTERM/SIGINT from outside: only a second one advances a stop
        self.stop: StopSequence | None = None
        # A stop's "after N s" and the runtime count from smsupervise's own start (``started``, on
        # the monotonic clock), not the loop's: a stop during the source unpack is not "after 0.0 s".
        self.started = time.monotonic() if run.started is None else run.started
        self.ended_at = 0.0  # wall clock: when the last step's process exited
        self._tick: asyncio.TimerHandle | None = None
        self.outputs: dict[int, Output] = {}  # our stdout and stderr
        self.output: ChildOutput | None = None
        self.recent = Recent()  # recent output for the debug socket
        self.on_outcome = on_outcome  # the outcome files, before a keep-alive
        self.keep_alive = KeepAlive(log)  # after a failure, with --keep-alive-on-failure
        self._holding = False
        self._limit: asyncio.TimerHandle | None = None
        self.terminal = run.terminal
        self.fd_reserve = FdReserve()  # what the stop and the outcome file need, kept for them
        self.siblings = Siblings(self.reaper, self._new_output)  # beside the job: not leftovers
        self.services = [make(self) for make in services]
        self.drain = _in_turn([s.drain for s in self.services if isinstance(s, Drains)])

    def _new_output(self) -> ChildOutput:
        """The framing of a new process's stdout and stderr into our outputs."""
        return ChildOutput(self.settings, self.log, self.outputs, self.counter, self.recent)

    # -- signals -------------------------------------------------------------------------------
    def _on_signal(self) -> None:
        if self.inbox.take_child_event():
            self.reaper.reap()
        for signum in self.inbox.drain():
            if signum in STOP_SIGNALS:
                self._request_stop(signum)
            else:
                self._forward(signum)

    def _forward(self, signum: int) -> None:
        """Send ``signum`` to the child's group (or the child) first, then say so."""
        child = self.child
        if child is None:
            self.log.info("signal_received", signal=signal_name(signum), action="ignored: no child yet")
            return
        if not child.send(signum, self.settings.forward_to):
            self.log.info("signal_received", signal=signal_name(signum), action="not forwarded: child gone")
            return
        target = child.describe(self.settings.forward_to)
        self.log.info("signal_forwarded", signal=signal_name(signum), target=target)

    def _request_stop(self, signum: int, reason: str | None = None) -> None:
        self.external_stops += reason is None
        if self.keep_alive.started:  # kept alive after a failure: a stop ends that at once
            self.log.info("signal_received", signal=signal_name(signum), action="keep-alive ended")
            self.keep_alive.end(reason or signal_name(signum))
            return
        if self.stop_signal is None:
            self.stop_signal = signum
            if self.child is not None:
                self._begin_stop(signum, reason)
            else:
                self.stop_reason = reason or signal_name(signum)
                self.log.info("signal_received", signal=signal_name(signum))
        elif self.stop is not None:
            # A second SIGTERM/SIGINT from outside moves the stop on to its next step at once. An
            # internal stop (fail-fast, --max-runtime) is no signal: the first external one after it
            # is the platform's own stop arriving, and it must not cut the checkpoint short.
            if reason is not None:
                return  # another internal reason (a second peer failed): the stop is under way
            if self.external_stops < 2:
                self.log.info("signal_received", signal=signal_name(signum), action="the stop goes on")
                return
            self.log.info("signal_received", signal=signal_name(signum))
            self.stop.advance_now(signum)

    def request_stop(self, reason: str) -> None:
        """Stop the run as SIGTERM would, with ``reason`` (a service's: an essential process exited,
        an exit hang)."""
        self._request_stop(signal.SIGTERM, reason)

    def _max_runtime(self) -> None:
        if self.stop_signal is None:
            self.log.warning("max_runtime_exceeded", max_runtime=self.settings.max_runtime)
            self._request_stop(signal.SIGTERM, MAX_RUNTIME_REASON)

    def _begin_stop(self, signum: int, reason: str | None) -> None:
        assert self.child is not None
        step = self.steps[self.step_index]
        main = step.is_main  # preparation steps (pip) get no checkpoint
        if main:
            self.cluster.stop_begun()
        ranks = self.cluster.ranks if main and self.cluster.ranks() is not None else None
        sent_at = None
        drain = self.drain if main else None
        if not (main and self.settings.checkpointing) and ranks is None and drain is None:
            # No checkpoint step: the signal goes out first, before any other work (stop latency).
            sent_at = time.monotonic()
            self.child.send(signum, self.settings.forward_to)
        self.stop_reason = reason or signal_name(signum)
        hook_output = self._new_output() if main and self.settings.checkpoint_hook is not None else None
        self.stop = StopSequence(
            self.settings,
            self.log,
            self.reaper,
            self.child,
            signum=signum,
            reason=self.stop_reason,
            run_started=self.started,
            checkpoint_env=step.spec.env if main else None,
            checkpoint_cwd=step.spec.cwd,
            ack_file=self.ack_file if main else None,
            hook_output=hook_output,
            workers=(lambda: ranks() or []) if ranks is not None else None,
            reserve=self.fd_reserve,
            adopt=self.siblings.running_checkpoint if main else None,
            drain=drain,
        )
        self.stop.begin(sent_at)

    # -- the run -------------------------------------------------------------------------------
    def _reap_tick(self) -> None:
        self.reaper.reap()
        self._tick = asyncio.get_running_loop().call_later(REAP_TICK, self._reap_tick)

    async def run(self) -> Outcome:
        """Run the steps in order to the end; raises ``SpawnError`` if one cannot start.

        A preparation step that fails, or a stop, ends the run before the next step starts. The
        outcome goes to ``on_outcome`` first; then, after a failure with --keep-alive-on-failure,
        the supervisor stays up (reaping, services) before the leftovers are ended.
        """
        loop = asyncio.get_running_loop()
        self.outputs = {fd: Output(loop, fd) for fd in (1, 2)}
        self.log.redirect(self.outputs[2].write_event)  # our events and the child's stderr never interleave
        self.inbox.attach(wake_for(loop, self._on_signal))
        self._on_signal()  # a signal that arrived while we were starting
        self._tick = loop.call_later(REAP_TICK, self._reap_tick)
        for service in self.services:
            service.start()
        if self.pipes.channels:
            self.pipes.start(loop, thread_wake())
        if self.settings.max_runtime:
            self._limit = loop.call_later(self.settings.max_runtime, self._max_runtime)
        try:
            outcome = await self._run_steps(loop)
            if self.on_outcome is not None:
                with self.fd_reserve.released():  # the outcome file, even at RLIMIT_NOFILE
                    self.on_outcome(outcome)
            if self._holding:
                await self.keep_alive.hold(self._keep_alive_left())
                await self._end_leftovers()
            return outcome
        finally:
            if self._limit is not None:
                self._limit.cancel()
            self._cleanup()

    async def _run_steps(self, loop: asyncio.AbstractEventLoop) -> Outcome:
        started = self.started
        for index, step in enumerate(self.steps):
            self.step_index = index
            if step.is_main and self.stop_signal is None:
                await self.cluster.before_main(lambda why: self._request_stop(signal.SIGTERM, why))
            if self.stop_signal is not None:
                name = signal_name(self.stop_signal)
                self.log.warning(
                    "stopped_before_start", signal=name, reason=self.stop_reason, step=step.label
                )
                code = ExitCode.SIGNAL_BASE + self.stop_signal
                elapsed = time.monotonic() - started
                settings = self.settings
                reason = self.stop_reason or name
                report = StopReport(
                    reason, elapsed, None, None, None, settings.grace_period, settings.max_runtime
                )
                return Outcome(None, code, report, elapsed, step)
            self.output = self._new_output()
            status = await self._run_child(loop, step)
            if step.is_main:
                # Fail-fast latency: the other hosts hear of a failure before leftovers are cleaned
                # up here (a cluster drains the output first, so the launcher's summary is in the tail).
                await self.cluster.launcher_exited(status, self._drained_tail, self.stop is not None)
            if self.stop is not None:
                await self.stop.settle()  # a checkpoint hook may still be saving: not a leftover
            last = not status.ok or index == len(self.steps) - 1 or self.stop_signal is not None
            failed = not status.ok and self.stop_signal is None
            self._holding = last and failed and self._keep_alive_left() > 0
            if self._holding:  # the leftovers stay for inspection; they are ended after the keep-alive
                await self.output.drain(self.settings.drain_timeout)
            else:
                await asyncio.gather(self._end_leftovers(), self.output.drain(self.settings.drain_timeout))
            if last:
                final = self.stop.report() if self.stop is not None else None
                runtime = time.monotonic() - started
                failures = tuple(self.pipes.failures)
                tail = self.output.stderr_tail()
                return Outcome(status, status.shell_code(), final, runtime, step, tail, failures)
        raise AssertionError("a plan has at least one step")

    async def _drained_tail(self) -> bytes:
        assert self.output is not None
        await self.output.drain(self.settings.drain_timeout)
        return self.output.stderr_tail()

    def _cleanup(self) -> None:
        for service in self.services:
            service.close()
        self.inbox.detach()
        if self._tick is not None:
            self._tick.cancel()
        if self.stop is not None and self.stop.task is not None:
            self.stop.task.cancel()
        if self.ack_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.ack_file)
        self.pipes.stop()
        self.fd_reserve.close()
        self.log.redirect(None)
        for output in self.outputs.values():
            output.detach()  # the epilogue writes what is left, after the outcome file (finish)

    def finish_output(self, deadline: float) -> tuple[int, int]:
        """After the loop and the outcome file: write what is still buffered for our stdout and
        stderr, until ``deadline`` or a stop signal; returns (bytes dropped, our events dropped)."""
        outputs = self.outputs.values()
        for output in outputs:
            output.finish(deadline, self.inbox.stop_pending)
        return sum(o.dropped_bytes for o in outputs), sum(o.dropped_events for o in outputs)

    async def _run_child(self, loop: asyncio.AbstractEventLoop, step: Step) -> ExitStatus:
        assert self.output is not None
        terminal = self.terminal if step.is_main else None
        stdout_w, stderr_w = self.output.open() if terminal is None else (None, None)
        try:
            child = spawn(step.spec, stdout_w, stderr_w, terminal)
        except BaseException:
            self.output.close_write_ends()
            raise
        # spawn and register in one step: no await between them (see reaper.py).
        exit_future = self.reaper.register(child.pid)
        self.child = child
        self.output.start(
            child.pid,
            host=step.spec.env.get("SM_CURRENT_HOST"),
            job=step.spec.env.get("TRAINING_JOB_NAME"),
            tags=self.cluster.record_tags() if step.is_main else None,
        )
        if child.pidfd is not None:
            loop.add_reader(child.pidfd, self.reaper.reap)
        if step.is_main:
            self.cluster.launcher_started(child.pid, self.outputs, self.counter, self.settings)
        self.log.info(
            "child_spawned",
            step=step.label,
            pid=child.pid,
            pgid=child.pgid,
            argv=list(child.argv),
            cwd=step.spec.cwd or os.getcwd(),
        )
        try:
            status = await exit_future
            self.ended_at = time.time()
        finally:
            if child.pidfd is not None:
                loop.remove_reader(child.pidfd)
            child.close()
            if terminal is not None:
                hand_terminal(terminal, os.getpgrp(), resume=False)  # the terminal is ours again
            if self.stop is not None:
                self.stop.on_child_exit()
        fields: dict[str, object] = {"step": step.label, "pid": child.pid, "exit_code": status.shell_code()}
        if status.signal is not None:
            fields["signal"] = signal_name(status.signal)
        self.log.info("child_exited", **fields)
        return status

    async def _end_leftovers(self) -> None:
        assert self.child is not None
        await end_leftovers(self.child, self.reaper, self.settings.leftover_grace, self.log)

    # -- keep-alive after a failure ------------------------------------------------------------
    def _keep_alive_left(self) -> float:
        """How long a keep-alive may last from now: the option, cut at --max-runtime."""
        seconds = self.settings.keep_alive_on_failure
        if self.settings.max_runtime:
            seconds = min(seconds, self.settings.max_runtime - (time.monotonic() - self.started))
        return max(0.0, seconds)

    def release(self) -> bool:
        """End a keep-alive now (``smsupervise-debug release``); False when there is none."""
        return self.keep_alive.end("released")

    # -- for the debug socket ------------------------------------------------------------------
    def state(self) -> RunState:
        """The run as typed data (``core.snapshot``); ``debug/statusview`` renders it."""
        now = time.monotonic()
        step = self.steps[self.step_index]
        stop = self.stop.snapshot() if self.stop is not None else None
        if stop is None and self.stop_signal is not None:
            stop = {"reason": self.stop_reason, "phase": "before start"}
        settings, child = self.settings, self.child
        return RunState(
            pid=os.getpid(),
            uptime_s=now - self.started,
            step=step.label,
            steps=tuple(s.label for s in self.steps),
            child=None
            if child is None
            else ChildView(child.pid, child.pgid, tuple(child.argv), step.spec.cwd),
            running=self.job_running(),
            host=step.spec.env.get("SM_CURRENT_HOST"),
            job=step.spec.env.get("TRAINING_JOB_NAME"),
            stop=stop,
            checkpoint=CheckpointView(
                settings.checkpoint_hook,
                signal_name(settings.checkpoint_signal) if settings.checkpoint_signal else None,
                settings.checkpoint_timeout if settings.checkpointing else None,
            ),
            grace_period=settings.grace_period,
            stop_budget=settings.stop_budget,
            streams={name: self._stream_counts(name) for name in ("stdout", "stderr")},
            pipes=tuple(self.pipes.snapshot()),
            keep_alive_seconds_left=self.keep_alive.seconds_left(now),
            services={
                k: v for s in self.services if isinstance(s, Reports) for k, v in s.status_fields().items()
            },
        )

    def _stream_counts(self, name: str) -> StreamCounts:
        lost = [output.lost.get(name, (0, 0)) for output in self.outputs.values()]
        return StreamCounts(
            self.recent.records[name],
            self.recent.bytes[name],
            sum(records for records, _ in lost),
            sum(size for _, size in lost),
        )

    def checkpointing(self, hook: Sibling) -> None:
        """A checkpoint hook started on demand: a stop that begins while it runs adopts it."""
        self.siblings.checkpointing(hook)

    def leftover_pids(self) -> list[int]:
        """After the job's main process exited: the processes still alive below us (its group and
        its orphans; zombies not yet reaped included), but not the debug service's siblings."""
        if self.child is None or self.job_running():
            return []
        return proctree.descendants(os.getpid(), skip=self.siblings.pids)

    @property
    def job_spec(self) -> LaunchSpec:
        """What the current step runs (its env and cwd are the job's)."""
        return self.steps[self.step_index].spec

    def main_pid(self) -> int | None:
        """The current step's process, once started."""
        return self.child.pid if self.child is not None else None

    def sibling_pids(self) -> set[int]:
        """The processes started beside the job that still run."""
        return set(self.siblings.pids)

    def stopping(self) -> bool:
        """Whether a stop has begun, or was asked for before the job started."""
        return self.stop is not None or self.stop_signal is not None

    def job_running(self) -> bool:
        """Whether the current step's process is alive (started and not reaped)."""
        return self.child is not None and self.reaper.waiting_for(self.child.pid)

    def signal_job(self, signum: int) -> bool:
        """Forward ``signum`` as if it had arrived here (a debug client asked); False: no child."""
        if not self.job_running():
            return False
        self._forward(signum)
        return True

    def spawn_sibling(self, argv: tuple[str, ...], extra_env: Mapping[str, str], capture: bool) -> Sibling:
        """Start ``argv`` beside the job with its environment (plus ``extra_env``) and cwd
        (``Siblings.spawn``). Raises ``SpawnError``."""
        spec = self.job_spec
        return self.siblings.spawn(LaunchSpec(argv, {**spec.env, **extra_env}, spec.cwd), capture)
