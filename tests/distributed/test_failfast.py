"""The cluster fails fast: one rank raising on algo-2 stops algo-1 through the supervisors' mesh,
with the root cause (host, rank, last stderr) in both failure files; without the mesh algo-1 waits
for its gloo timeout. And a host that never resolves."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.distributed import jobs
from tests.distributed.conftest import needs_hosts, needs_torch
from tests.distributed.hosts import Cluster

FAILING = {
    "sagemaker_torch_distributed_enabled": True,
    "sagemaker_mpi_num_of_processes_per_host": 2,
    "fail-rank": 3,  # algo-2's local rank 1
    "fail-step": 0,  # before joining the process group: the others wait in the rendezvous
}


@needs_hosts
@needs_torch
@pytest.mark.slow
def test_a_rank_failing_on_host_2_stops_host_1_with_the_root_cause(cluster: Callable[..., Cluster]) -> None:
    """algo-1 stops on algo-2's report, long before its 60 s gloo timeout; both files name rank 3."""
    c = cluster(2)
    jobs.write_job(c, {**FAILING, "timeout": 60})
    started = time.monotonic()
    codes = jobs.wait_all(jobs.start_all(c), 55)
    assert time.monotonic() - started < 55  # the gloo timeout (60 s) never came into it
    assert codes["algo-2"] == 1, jobs.tail(c, "algo-2")
    assert codes["algo-1"] != 0
    one = {e["event"]: e for e in jobs.events(c, "algo-1")}
    assert one["peer_failed"]["host"] == "algo-2"
    assert one["peer_failed"]["rank"] == 3
    assert one["stop_requested"]["reason"] == "fail-fast: algo-2 failed"
    for host in c.names:
        text = jobs.failure(c, host)
        if host == "algo-2":
            assert text.startswith(
                "First failure in the cluster: rank 3 (local_rank 1) on this host, algo-2."
            )
        else:
            assert text.startswith(
                "First failure in the cluster: rank 3 (local_rank 1) on algo-2: Training exited"
            )
            assert "\nOn this host:\nStopped by fail-fast: algo-2 failed" in text
        assert "ValueError: rank 3 fails at step 0 on purpose" in text


@needs_hosts
@needs_torch
@pytest.mark.slow
def test_a_failed_rank_is_told_before_its_torchrun_notices(cluster: Callable[..., Cluster]) -> None:
    """torchrun looks at its ranks every 20 s here: algo-1 hears of rank 3 from its pidfd, before
    algo-2's torchrun exits; the root cause and the rank's traceback still reach both files."""
    c = cluster(2)
    jobs.write_job(c, {**FAILING, "timeout": 60})
    codes = jobs.wait_all(jobs.start_all(c, env=jobs.environment(PET_MONITOR_INTERVAL="20")), 55)
    assert codes["algo-2"] == 1, jobs.tail(c, "algo-2")
    two = {e["event"]: e for e in jobs.events(c, "algo-2")}
    assert (two["rank_failed"]["rank"], two["rank_failed"]["local_rank"]) == (3, 1)
    assert two["rank_failed"]["status"] == "exit code 1"
    heard = {e["event"]: e for e in jobs.events(c, "algo-1")}["peer_failed"]
    assert heard["rank"] == 3
    assert heard["ts"] < two["child_exited"]["ts"]  # while algo-2's torchrun had not noticed yet
    for host in c.names:
        assert "ValueError: rank 3 fails at step 0 on purpose" in jobs.failure(c, host)
        assert not list((c.root / host).glob("**/smsupervise-ranks-*"))  # torchrun's files: removed


@needs_hosts
@needs_torch
@pytest.mark.slow
def test_without_fail_fast_host_1_waits_for_the_gloo_timeout(cluster: Callable[..., Cluster]) -> None:
    """The negative twin: --fail-fast off, algo-1 learns nothing and fails only when gloo times out."""
    c = cluster(2)
    timeout = 15
    jobs.write_job(c, {**FAILING, "timeout": timeout})
    started = time.monotonic()
    procs = jobs.start_all(c, "--fail-fast", "off")
    assert procs["algo-2"].wait(60) == 1
    assert procs["algo-1"].wait(60) != 0
    assert time.monotonic() - started >= timeout
    names = [e["event"] for e in jobs.events(c, "algo-1")]
    assert "peer_failed" not in names
    assert "stop_requested" not in names
    assert "algo-2" not in jobs.failure(c, "algo-1")
    assert "Timed out" in jobs.failure(c, "algo-1") or "timeout" in jobs.failure(c, "algo-1").lower()


@needs_hosts
def test_a_host_that_never_resolves_is_named(cluster: Callable[..., Cluster]) -> None:
    """algo-3 is in resourceconfig.json but resolves nowhere: algo-1 waits (one event), then names it."""
    c = cluster(3, resolvable=2)
    jobs.write_job(c, {"sagemaker_torch_distributed_enabled": True})
    argv = [jobs.sys.executable, "-m", "smsupervise", "--peer-wait", "2", "train"]
    with (c.root / "algo-1.out").open("wb") as out, (c.root / "algo-1.err").open("wb") as err:
        process = c.popen("algo-1", argv, env=jobs.environment(), stdout=out, stderr=err)
    assert process.wait(60) == 1
    waiting = [e for e in jobs.events(c, "algo-1") if e["event"] == "peer_waiting"]
    assert [e["host"] for e in waiting] == ["algo-3"]
    text = jobs.failure(c, "algo-1")
    assert text.startswith("Not started: host 'algo-3' of resourceconfig.json never resolved"), text
    assert "child_spawned" not in [e["event"] for e in jobs.events(c, "algo-1")]
