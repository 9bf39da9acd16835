"""Memory decisions on typed facts: which departed process an OOM-kill counter's move belongs to,
and when memory pressure deserves a warning. Pure functions; the sampler feeds them.

The kernel's OOM killer picks the process with the highest badness (its RSS, swap and page tables,
scaled by ``oom_score_adj``) and sends it SIGKILL; no counter names it. So: the counter moving says
*that* the OOM killer killed (a plain ``kill -9`` or smsupervise's own SIGKILL never moves it); the
victim is a process of the job that died by SIGKILL (its status seen: a zombie, or one we reaped)
in the same interval, else the largest of the processes that vanished unseen. A process whose
death we saw with another cause (an exit code, SIGTERM) is never the victim.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import NamedTuple

from smsupervise.diagnose.facts import Departure, OomKill

PRESSURE_SHARE = 0.90  # usage / limit that warns
PRESSURE_REARM = 0.80  # ...and has to fall below before it warns again
PSI_FULL = 10.0  # PSI "full avg10" (percent of the last 10 s all tasks stalled on memory) that warns


class Counter(NamedTuple):
    """An OOM-kill counter as read at one sample."""

    source: str  # "cgroup v2 memory.events", "cgroup v1 memory.oom_control", "/proc/vmstat"
    value: int


def victims(
    kills: int,
    gone: Sequence[Departure],
    *,
    counter: str,
    limit: int | None,
    usage: int | None,
    available: int | None,
    main_pid: int | None,
) -> list[OomKill]:
    """``kills`` OOM kills (a counter's move) attributed to the processes that departed meanwhile:
    those that died by SIGKILL first, then those gone unseen, each group largest (by the highest
    RSS sampled) first."""
    killed = [d for d in gone if d.status is not None and d.status.signal == signal.SIGKILL]
    unseen = [d for d in gone if d.status is None]
    ranked = sorted(killed, key=lambda d: -d.proc.peak) + sorted(unseen, key=lambda d: -d.proc.peak)
    found = []
    for index in range(kills):
        victim = ranked[index] if index < len(ranked) else None
        by_status = victim is not None and victim.status is not None
        main = victim is not None and victim.proc.pid == main_pid
        found.append(OomKill(victim, by_status, counter, limit, usage, available, main))
    return found


class PressureGate:
    """Warn once when usage passes 90 % of the limit or PSI full avg10 passes 10 %; again only
    after it fell back (below 80 %, PSI below half the threshold)."""

    def __init__(self) -> None:
        self.armed = True

    def check(self, usage: int | None, limit: int | None, psi_full: float | None) -> bool:
        """Whether this reading deserves a ``memory_pressure`` warning."""
        share = usage / limit if usage is not None and limit else 0.0
        high = share >= PRESSURE_SHARE or (psi_full is not None and psi_full >= PSI_FULL)
        low = share < PRESSURE_REARM and (psi_full is None or psi_full < PSI_FULL / 2)
        if high and self.armed:
            self.armed = False
            return True
        if low:
            self.armed = True
        return False
