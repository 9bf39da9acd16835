"""The rings' share of the user's pipe budget: pure arithmetic on the kernel's figures."""

from __future__ import annotations

from smsupervise.linux.pipes import PIPE_SIZE, PipeLimits
from smsupervise.pipemode.budget import plan_rings

MIB = 1 << 20
ASK = 64 * MIB


def _limits(soft_mib: int, in_use: int = 0, exempt: bool = False, max_size: int = PIPE_SIZE) -> PipeLimits:
    return PipeLimits(max_size=max_size, user_soft=soft_mib * MIB, exempt=exempt, in_use=in_use)


def test_without_a_limit_every_ring_gets_what_it_asked_for() -> None:
    """Exempt (CAP_SYS_ADMIN/RESOURCE) or no soft limit: the rings are not reduced."""
    assert plan_rings((ASK, ASK, ASK), _limits(64, exempt=True)).rings == (ASK, ASK, ASK)
    assert plan_rings((ASK,), _limits(0)).rings == (ASK,)
    assert plan_rings((ASK,), _limits(64, exempt=True)).limit is None


def test_under_the_default_limit_three_channels_share_and_leave_headroom() -> None:
    """64 MiB for the user: three rings together stay within it, with a quarter and every channel's
    two FIFOs and the log pipes set aside; each ring is whole pipes."""
    plan = plan_rings((ASK, ASK, ASK), _limits(64, in_use=2 * MIB))
    assert plan.limit == 64 * MIB
    assert plan.reserved == 16 * MIB + (2 * 3 + 2) * MIB
    assert plan.rings == (12 * MIB, 12 * MIB, 12 * MIB)  # (64 - 2 - 24) / 3, in whole MiB
    assert sum(plan.rings) + plan.reserved + plan.in_use <= plan.limit


def test_a_ring_never_gets_more_than_it_asked_for() -> None:
    """A small --pipe-buffer stays small even with budget to spare."""
    assert plan_rings((4 * MIB,), _limits(64)).rings == (4 * MIB,)


def test_a_used_up_budget_still_gives_each_ring_one_pipe() -> None:
    """Nothing left: one pipe each (the kernel may give it fewer pages; the run never fails)."""
    assert plan_rings((ASK, ASK), _limits(8, in_use=8 * MIB)).rings == (MIB, MIB)


def test_pipes_follow_a_smaller_pipe_max_size() -> None:
    """A pipe-max-size below 1 MiB sets the size every relay pipe is raised to."""
    plan = plan_rings((ASK,), _limits(64, max_size=256 << 10))
    assert plan.pipe_size == 256 << 10
    assert plan.rings[0] % plan.pipe_size == 0
