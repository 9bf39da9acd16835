"""Ending what a step left behind: TERM the child's group and every other descendant, wait for the
leftover grace, then KILL (as tini and dumb-init do not: they exit and let the kernel kill the
namespace). Runs on the supervisor's loop; the waits are the reaper's (childless), never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from smsupervise.core.reaper import Reaper
from smsupervise.core.spawn import Child, send_to_pid
from smsupervise.linux import proctree
from smsupervise.streams.events import EventLog

KILL_WAIT = 5.0  # after SIGKILL, how long to wait for the kernel before leaving anyway


async def end_leftovers(child: Child, reaper: Reaper, grace: float, log: EventLog) -> None:
    """TERM what is left of ``child``'s group and every other descendant, wait ``grace`` seconds
    for the last of them to be reaped, then KILL; each step is an event (``leftovers_terminated``,
    ``leftovers_killed``, ``leftovers_unkillable``). Nothing left: no event."""
    no_children = reaper.reap()
    pids = [] if no_children else proctree.descendants(os.getpid())
    if not pids and not child.group_alive():
        return
    _send(child, signal.SIGTERM, pids)
    log.info("leftovers_terminated", count=len(pids), pids=pids[:50], leftover_grace=grace)
    childless = reaper.wait_childless()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(childless), grace)
    if childless.done():
        return
    remaining = proctree.descendants(os.getpid())
    _send(child, signal.SIGKILL, remaining)
    log.warning("leftovers_killed", count=len(remaining), pids=remaining[:50])
    try:
        await asyncio.wait_for(childless, KILL_WAIT)
    except asyncio.TimeoutError:
        log.error(
            "leftovers_unkillable",
            pids=proctree.descendants(os.getpid())[:50],
            hint="processes in uninterruptible sleep (D state) ignore SIGKILL",
        )


def _send(child: Child, signum: int, pids: list[int]) -> None:
    """The child's group first (``Child.send`` knows whether it is still ours), then each pid."""
    child.send(signum)
    for pid in pids:
        send_to_pid(pid, signum)
