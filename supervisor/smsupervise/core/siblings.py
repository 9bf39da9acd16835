"""Processes started beside the job for the debug socket (``exec``, ``run``, an on-demand
checkpoint hook): with the job's environment and cwd, reaped by the reaper like the job, their
output logged like the job's or handed back to the caller, and never counted among the job's
leftovers while they run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import NamedTuple

from smsupervise.core.reaper import Reaper
from smsupervise.core.spawn import Child, LaunchSpec, spawn
from smsupervise.core.status import ExitStatus
from smsupervise.streams.childpipes import ChildOutput


class Sibling(NamedTuple):
    """A process started beside the job (``exec``, an on-demand checkpoint hook)."""

    child: Child
    exit: asyncio.Future[ExitStatus]
    stdout: int | None  # read ends when the output is captured for the caller, else None
    stderr: int | None


class Siblings:
    """The siblings of one run; ``pids`` are those still running."""

    def __init__(self, reaper: Reaper, new_output: Callable[[], ChildOutput]) -> None:
        self.reaper = reaper
        self.new_output = new_output  # a ChildOutput on the run's current outputs
        self.pids: set[int] = set()
        self._checkpoint: Sibling | None = None  # the on-demand checkpoint hook, while it runs

    def checkpointing(self, hook: Sibling) -> None:
        """``hook`` is a checkpoint hook run on demand: a stop that begins while it runs adopts it
        (``running_checkpoint``) instead of starting a second writer of the same checkpoint."""
        self._checkpoint = hook
        hook.exit.add_done_callback(lambda _: self._forget(hook))

    def _forget(self, hook: Sibling) -> None:
        if self._checkpoint is hook:
            self._checkpoint = None

    def running_checkpoint(self) -> Sibling | None:
        """The on-demand checkpoint hook, if it is still running."""
        hook = self._checkpoint
        return hook if hook is not None and not hook.exit.done() else None

    def spawn(self, launch: LaunchSpec, capture: bool) -> Sibling:
        """Start ``launch``. ``capture``: its output comes back as two read ends for the caller;
        otherwise it is logged like the job's. Raises ``SpawnError``."""
        if capture:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            try:
                child = spawn(launch, out_w, err_w)
            except BaseException:
                os.close(out_r)
                os.close(err_r)
                raise
            finally:
                os.close(out_w)
                os.close(err_w)
            child.close()  # reaped through SIGCHLD; the pidfd is not watched
            return Sibling(child, self._exit(child.pid), out_r, err_r)  # same callback
        output = self.new_output()
        stdout_w, stderr_w = output.open()
        try:
            child = spawn(launch, stdout_w, stderr_w)
        except BaseException:
            output.close_write_ends()
            raise
        exit_future = self._exit(child.pid)  # same callback as the spawn
        child.close()
        env = launch.env
        output.start(child.pid, host=env.get("SM_CURRENT_HOST"), job=env.get("TRAINING_JOB_NAME"))
        return Sibling(child, exit_future, None, None)

    def _exit(self, pid: int) -> asyncio.Future[ExitStatus]:
        """Register a sibling with the reaper; it is not a leftover while it runs."""
        self.pids.add(pid)
        exit_future = self.reaper.register(pid)
        exit_future.add_done_callback(lambda _: self.pids.discard(pid))
        return exit_future
