"""The supervisors' heartbeat: a host whose smsupervise joined the mesh and then falls silent (it is
stopped, or the network between the hosts is cut) fails the job after --peer-timeout, with a failure
file naming it; a host whose job is busy and silent still beats and is not failed."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import HELPERS, sleep_until
from tests.distributed import jobs
from tests.distributed.conftest import needs_hosts
from tests.distributed.hosts import Cluster

pytestmark = [needs_hosts, pytest.mark.slow]
FLAGS = ("--peer-timeout", "2", "--log-level", "debug")


def _start(c: Cluster, seconds: float) -> dict[str, subprocess.Popen[bytes]]:
    """Both hosts run the quiet job; returns once both meshes are joined and both jobs train."""
    jobs.write_job(c, {"seconds": seconds}, script=HELPERS / "quiet_train.py")
    procs = jobs.start_all(c, *FLAGS)

    def joined() -> bool:
        return all(
            "mesh_connected" in [e["event"] for e in jobs.events(c, h)]
            and any(r.get("msg") == "training" for r in jobs.records(c, h))
            for h in c.names
        )

    sleep_until(joined, timeout=60, interval=0.1, what="both hosts in the mesh and training")
    return procs


def test_a_stopped_supervisor_is_failed_after_the_peer_timeout(cluster: Callable[..., Cluster]) -> None:
    """algo-2's smsupervise is SIGSTOPped: algo-1 stops its job and names algo-2 as gone silent."""
    c = cluster(2)
    procs = _start(c, 120)
    cmdline = Path(f"/proc/{procs['algo-2'].pid}/cmdline").read_bytes()
    assert b"smsupervise" in cmdline  # ip netns exec, unshare and sh all exec: this is smsupervise
    os.kill(procs["algo-2"].pid, signal.SIGSTOP)
    try:
        assert procs["algo-1"].wait(60) == 128 + signal.SIGTERM, jobs.tail(c, "algo-1")
    finally:
        os.kill(procs["algo-2"].pid, signal.SIGCONT)
    silent = [e for e in jobs.events(c, "algo-1") if e["event"] == "peer_silent"]
    assert [(e["host"], e["timeout_s"]) for e in silent] == [("algo-2", 2.0)]
    text = jobs.failure(c, "algo-1")
    assert text.startswith("algo-2 went silent: its smsupervise sent nothing for 2 s"), text
    assert "Stopped by fail-fast: algo-2 went silent" in text


def test_a_partition_fails_both_sides_naming_the_other(cluster: Callable[..., Cluster]) -> None:
    """algo-2's eth0 goes down: each host hears nothing from the other and names it."""
    c = cluster(2)
    procs = _start(c, 120)
    subprocess.run(["ip", "-n", c.namespace("algo-2"), "link", "set", "eth0", "down"], check=True)
    codes = jobs.wait_all(procs, 60)
    assert codes == {"algo-1": 143, "algo-2": 143}, jobs.tail(c, "algo-2")
    for host, other in (("algo-1", "algo-2"), ("algo-2", "algo-1")):
        assert jobs.failure(c, host).startswith(f"{other} went silent"), jobs.failure(c, host)


def test_a_busy_silent_job_is_not_a_silent_host(cluster: Callable[..., Cluster]) -> None:
    """The negative twin: both jobs print nothing for 4x the timeout; the supervisors still beat,
    so both jobs run to their end."""
    c = cluster(2)
    procs = _start(c, 8)
    assert jobs.wait_all(procs, 60) == {"algo-1": 0, "algo-2": 0}, jobs.tail(c, "algo-1")
    for host in c.names:
        assert "peer_silent" not in [e["event"] for e in jobs.events(c, host)]
        assert any(r.get("msg") == "done" for r in jobs.records(c, host))
