"""A torchrun rank's failure is noticed from its pidfd while its parent has not reaped it yet: real
processes, a stand-in launcher that spawns "ranks" (LOCAL_RANK in their environment) and reaps
nothing until it is told to."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

from smsupervise.distributed.rankwatch import RankExit, RankWatch
from smsupervise.linux import proctree
from tests.conftest import sleep_until

# Spawns one rank per argument (each waits for its stdin to close; then "hold" ends, the others
# raise SystemExit(code)), prints their pids; on a first line on its stdin it lets the ranks with a
# code end (and does not reap them), on a second it ends the rest and reaps them all.
LAUNCHER = textwrap.dedent(
    """
    import os, subprocess, sys
    ranks = []
    for local, code in enumerate(sys.argv[1:]):
        body = "import sys; sys.stdin.read()" + ("" if code == "hold" else f"; raise SystemExit({code})")
        env = {**os.environ, "LOCAL_RANK": str(local)}
        ranks.append(subprocess.Popen([sys.executable, "-c", body], env=env, stdin=subprocess.PIPE))
    print(" ".join(str(r.pid) for r in ranks), flush=True)
    sys.stdin.readline()
    for r, code in zip(ranks, sys.argv[1:]):
        if code != "hold":
            r.stdin.close()
    sys.stdin.readline()
    for r in ranks:
        r.stdin.close()
        r.wait()
    """
)


async def _watch(codes: list[str], *, stop_first: bool = False) -> tuple[list[RankExit], list[int]]:
    """Run the stand-in launcher under a RankWatch until every rank that ends by itself has ended
    and been looked at; returns what the watch reported and the ranks' pids."""
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, *codes], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert launcher.stdout is not None
    assert launcher.stdin is not None
    pids = [int(p) for p in launcher.stdout.readline().split()]
    failed: list[RankExit] = []
    ending = [pid for pid, code in zip(pids, codes, strict=True) if code != "hold"]

    async def main() -> None:
        watch = RankWatch(launcher.pid, node_rank=1, per_host=len(codes), on_failed=failed.append)
        if stop_first:
            watch.stop_begun()
        watch.start()
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while loop.time() < end and not (watch.task is not None and watch.task.done()):
            await asyncio.sleep(0.01)  # every rank found (while all of them still run)
        assert watch.task is not None
        assert watch.task.done(), "the ranks were never all found"
        launcher.stdin.write(b"end\n")  # the ranks with a code end now, unreaped
        launcher.stdin.flush()
        while loop.time() < end and set(ending) & set(watch.watched):
            await asyncio.sleep(0.01)  # every rank that ended seen ending (its reader ran)
        assert not set(ending) & set(watch.watched), "a rank's exit was never seen"
        watch.close()

    try:
        await main()
    finally:
        launcher.stdin.write(b"end\nreap\n")  # (an extra line is harmless: nobody reads it)
        launcher.stdin.close()
        launcher.wait(30)
    return failed, pids


@pytest.mark.asyncio
async def test_a_rank_that_fails_is_reported_with_its_global_rank_and_status() -> None:
    """Local rank 1 of node 1 (two per host) exits 3: rank 3 is reported, the running rank is not."""
    failed, _ = await _watch(["hold", "3"])
    assert [(f.rank, f.local_rank, f.status.code) for f in failed] == [(3, 1, 3)]


@pytest.mark.asyncio
async def test_a_rank_that_ends_well_or_during_a_stop_is_not_a_failure() -> None:
    """The negative twin: exit 0 is no failure, and once a stop began a failing exit is its doing."""
    assert (await _watch(["0", "hold"]))[0] == []
    assert (await _watch(["hold", "3"], stop_first=True))[0] == []


def test_a_status_is_read_only_between_the_exit_and_the_reaping() -> None:
    """zombie_status: None while the process runs, its wait status as a zombie, None once reaped."""
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(); raise SystemExit(3)"],
                               stdin=subprocess.PIPE)  # fmt: skip
    assert process.stdin is not None
    assert proctree.zombie_status(process.pid) is None
    process.stdin.close()
    status = sleep_until(lambda: proctree.zombie_status(process.pid), what="the zombie's status")
    assert os.WEXITSTATUS(status) == 3
    process.wait()
    assert proctree.zombie_status(process.pid) is None
