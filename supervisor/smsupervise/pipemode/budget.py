"""One pipe budget for all of the relay's rings.

Without CAP_SYS_RESOURCE or CAP_SYS_ADMIN, all pipes of a user together are capped by
``pipe-user-pages-soft`` (64 MiB by default), shared with every other process of that uid, the
platform's own included; past it a new pipe gets two pages and no pipe may grow (pipe(7)). Three
channels asking for a 64 MiB ring each would use it up and leave every other pipe of the user at one
page. So the rings share what is left after what the uid already holds, the two FIFOs of every
channel and the job's log pipes, minus a quarter kept for the job's own pipes; each ring gets at
least one pipe, and the kernel may still refuse more at run time (the ring then stops growing).
"""

from __future__ import annotations

from dataclasses import dataclass

from smsupervise.linux.pipes import PIPE_SIZE, PipeLimits

HEADROOM_SHARE = 4  # 1/4 of the user's budget stays for the job's own pipes
LOG_PIPES = 2  # the job's stdout and stderr, raised to 1 MiB by smsupervise
FIFOS_PER_CHANNEL = 2  # the platform's FIFO and ours, both raised to 1 MiB


@dataclass(frozen=True, slots=True)
class RingPlan:
    """What each ring may hold, and the figures it was worked out from."""

    pipe_size: int  # every relay pipe is raised to this
    rings: tuple[int, ...]  # bytes per channel, in the order asked
    limit: int | None  # the user's pipe budget in bytes; None when no limit applies to us
    in_use: int  # what the uid already held (as far as we can see)
    reserved: int  # headroom, the channels' FIFOs and the log pipes

    def describe(self) -> dict[str, object]:
        """The budget's figures, for the ``pipe_relay_started`` event."""
        return {"limit": self.limit, "in_use": self.in_use, "reserved": self.reserved}


def plan_rings(wanted: tuple[int, ...], limits: PipeLimits) -> RingPlan:
    """Split the budget evenly; a ring never gets more than it asked for, nor less than one pipe."""
    pipe_size = min(PIPE_SIZE, limits.max_size) if limits.max_size > 0 else PIPE_SIZE
    if limits.exempt or limits.user_soft <= 0 or not wanted:
        return RingPlan(pipe_size, wanted, None, 0, 0)
    reserved = limits.user_soft // HEADROOM_SHARE + (FIFOS_PER_CHANNEL * len(wanted) + LOG_PIPES) * pipe_size
    share = max(0, limits.user_soft - limits.in_use - reserved) // len(wanted)
    share = max(pipe_size, share // pipe_size * pipe_size)
    rings = tuple(min(ask, share) for ask in wanted)
    return RingPlan(pipe_size, rings, limits.user_soft, limits.in_use, reserved)
