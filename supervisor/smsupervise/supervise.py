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
from collections.abc import Callable
from typing import NamedTuple

from smsupervise import proctree
from smsupervise.launch import Step
from smsupervise.logrelay import ChildOutput
from smsupervise.logs import EventLog
from smsupervise.output import Output
from smsupervise.reaper import Reaper
from smsupervise.settings import Settings
from smsupervise.signals import STOP_SIGNALS, SignalInbox
from smsupervise.spawn import Child, spawn
from smsupervise.status import ExitCode, ExitStatus, signal_name

REAP_TICK = 1.0  # backstop in case a SIGCHLD is coalesced away (tini uses the same 1 s)
KILL_WAIT = 5.0  # after SIGKILL, how long to wait for the kernel before leaving anyway


class Outcome(NamedTuple):
    """How the supervised run ended; ``exit_code`` is what smsupervise exits with."""

    status: ExitStatus | None  # None: the child never started
    exit_code: int
    stop_signal: int | None  # the signal that asked us to stop, if any
    killed_after_grace: bool
    runtime: float
    stderr_tail: bytes = b""
    step: str = ""  # the step that ended the run ("training", "installing requirements.txt", ...)


class Supervisor:
    """Runs one ``LaunchSpec`` to completion. Create it and ``await run()`` once."""

    def __init__(
        self, steps: tuple[Step, ...], settings: Settings, inbox: SignalInbox, log: EventLog
    ) -> None:
        self.steps = steps
        self.settings = settings
        self.inbox = inbox
        self.log = log
        self.reaper = Reaper()
        self.child: Child | None = None
        self.stop_signal: int | None = None
        self.killed_after_grace = False
        self._advance: asyncio.Event | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._tick: asyncio.TimerHandle | None = None
        self.output: ChildOutput | None = None

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
        group = self.settings.forward_to == "group"
        try:
            if group:
                os.killpg(child.pgid, signum)
            else:
                os.kill(child.pid, signum)
        except ProcessLookupError:
            self.log.info("signal_received", signal=signal_name(signum), action="not forwarded: child gone")
            return
        self.log.info("signal_forwarded", signal=signal_name(signum),
                      target=f"process group {child.pgid}" if group else f"pid {child.pid}")

    def _request_stop(self, signum: int) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
            if self.child is not None:
                self._begin_stop(signum)
            else:
                self.log.info("signal_received", signal=signal_name(signum))
        elif self._advance is not None:
            # A second SIGTERM/SIGINT during the stop moves on to the next step at once.
            self.log.info("signal_received", signal=signal_name(signum))
            self.log.info("stop_advanced", signal=signal_name(signum))
            self._advance.set()

    # -- the stop sequence ---------------------------------------------------------------------
    def _begin_stop(self, signum: int) -> None:
        """Forward at once, in the same callback as the signal (latency matters), then log."""
        self._advance = asyncio.Event()
        self._forward(signum)
        self.log.info("stop_requested", signal=signal_name(signum), grace_period=self.settings.grace_period)
        self._stop_task = asyncio.get_running_loop().create_task(self._stop_sequence())

    async def _stop_sequence(self) -> None:
        if not await self._wait_step(self.settings.grace_period):
            self.log.warning("grace_expired", grace_period=self.settings.grace_period, action="SIGKILL")
        self.killed_after_grace = True
        self._kill_group(signal.SIGKILL)

    async def _wait_step(self, seconds: float) -> bool:
        """Wait ``seconds`` or until a second stop signal; True if it was cut short."""
        assert self._advance is not None
        try:
            await asyncio.wait_for(self._advance.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        self._advance.clear()
        return True

    def _kill_group(self, signum: int) -> None:
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pgid, signum)

    # -- the run -------------------------------------------------------------------------------
    def _reap_tick(self) -> None:
        self.reaper.reap()
        self._tick = asyncio.get_running_loop().call_later(REAP_TICK, self._reap_tick)

    async def run(self) -> Outcome:
        """Run the steps in order to the end; raises ``SpawnError`` if one cannot start.

        A preparation step that fails, or a stop, ends the run before the next step starts.
        """
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        outputs = {fd: Output(loop, fd) for fd in (1, 2)}
        self.log.redirect(outputs[2].write)  # our events and the child's stderr never interleave
        self.inbox.attach(_wake_for(loop, self._on_signal))
        self._on_signal()  # a signal that arrived while we were starting
        self._tick = loop.call_later(REAP_TICK, self._reap_tick)
        try:
            for index, step in enumerate(self.steps):
                if self.stop_signal is not None:
                    name = signal_name(self.stop_signal)
                    self.log.warning("stopped_before_start", signal=name, step=step.name)
                    code = ExitCode.SIGNAL_BASE + self.stop_signal
                    elapsed = time.monotonic() - started
                    return Outcome(None, code, self.stop_signal, False, elapsed, step=step.name)
                self.output = ChildOutput(self.settings, self.log, outputs)
                status = await self._run_child(loop, step)
                await asyncio.gather(self._end_leftovers(), self.output.drain(self.settings.drain_timeout))
                if not status.ok or index == len(self.steps) - 1 or self.stop_signal is not None:
                    return Outcome(status, status.shell_code(), self.stop_signal, self.killed_after_grace,
                                   time.monotonic() - started, self.output.stderr_tail(), step.name)
            raise AssertionError("a plan has at least one step")
        finally:
            self.inbox.detach()
            if self._tick is not None:
                self._tick.cancel()
            self.log.redirect(None)
            for output in outputs.values():
                output.close()

    async def _run_child(self, loop: asyncio.AbstractEventLoop, step: Step) -> ExitStatus:
        assert self.output is not None
        stdout_w, stderr_w = self.output.open()
        try:
            child = spawn(step.spec, stdout_w, stderr_w)
        except BaseException:
            self.output.close_write_ends()
            raise
        # spawn and register in one step: no await between them (see reaper.py).
        exit_future = self.reaper.register(child.pid)
        self.child = child
        self.output.start(child.pid, host=step.spec.env.get("SM_CURRENT_HOST"),
                          job=step.spec.env.get("TRAINING_JOB_NAME"))
        if child.pidfd is not None:
            loop.add_reader(child.pidfd, self.reaper.reap)
        self.log.info("child_spawned", step=step.name, pid=child.pid, pgid=child.pgid, argv=list(child.argv),
                      cwd=step.spec.cwd or os.getcwd())
        try:
            status = await exit_future
        finally:
            if child.pidfd is not None:
                loop.remove_reader(child.pidfd)
                os.close(child.pidfd)
            if self._stop_task is not None:
                self._stop_task.cancel()
        if self._stop_task is not None and self._stop_task.done():
            self._stop_task = None
        fields: dict[str, object] = {"step": step.name, "pid": child.pid, "exit_code": status.shell_code()}
        if status.signal is not None:
            fields["signal"] = signal_name(status.signal)
        self.log.info("child_exited", **fields)
        return status

    async def _end_leftovers(self) -> None:
        """TERM what is left of the child's group and every other descendant, wait, then KILL."""
        assert self.child is not None
        self.reaper.reap()
        pids = proctree.descendants(os.getpid())
        group_alive = _group_alive(self.child.pgid)
        if not pids and not group_alive:
            return
        self._signal_leftovers(signal.SIGTERM, pids)
        self.log.info("leftovers_terminated", count=len(pids), pids=pids[:50],
                      leftover_grace=self.settings.leftover_grace)
        childless = self.reaper.wait_childless()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(childless), self.settings.leftover_grace)
        if childless.done():
            return
        remaining = proctree.descendants(os.getpid())
        self._signal_leftovers(signal.SIGKILL, remaining)
        self.log.warning("leftovers_killed", count=len(remaining), pids=remaining[:50])
        try:
            await asyncio.wait_for(childless, KILL_WAIT)
        except asyncio.TimeoutError:
            self.log.error("leftovers_unkillable", pids=proctree.descendants(os.getpid())[:50],
                           hint="processes in uninterruptible sleep (D state) ignore SIGKILL")

    def _signal_leftovers(self, signum: int, pids: list[int]) -> None:
        self._kill_group(signum)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def _wake_for(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> Callable[[], None]:
    """How a signal handler schedules ``callback`` on ``loop``.

    Python runs signal handlers on the main thread, between bytecodes. Under uvloop that is always
    inside a loop iteration (uvloop reads its wake-up fd, then runs pending handlers), so a plain
    ``call_soon`` is safe and saves a second eventfd round trip (TERM latency, benchmarks/pid1.py).
    The stdlib loop may be inside ``epoll_wait``, which PEP 475 retries after the handler, so it
    needs ``call_soon_threadsafe`` to write its self-pipe and wake up.
    """
    if type(loop).__module__.startswith("uvloop"):

        def wake() -> None:
            loop.call_soon(callback)

    else:

        def wake() -> None:
            loop.call_soon_threadsafe(callback)

    return wake


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
