"""The mesh on namespaced hosts, against a process of the job's own host: one that knows only the
job's name cannot stop algo-1's job; one with the key (any process of the job's container can
derive it) that sends reports of wrong types stops nothing and crashes nothing, and its valid
report after them is acted on; hundreds of connections held open from a job host's address and
from a stranger's leave algo-1's smsupervise with a bounded number of descriptors, and the mesh
still carries a real failure."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from smsupervise.distributed.failfast import ACCEPT_BATCH, PENDING_TOTAL
from tests.conftest import HELPERS, sleep_until
from tests.distributed import jobs
from tests.distributed.conftest import needs_hosts
from tests.distributed.hosts import Cluster

pytestmark = [needs_hosts, pytest.mark.slow]
SCRIPT = HELPERS / "mesh_job.py"


def _start(c: Cluster, host: str, *flags: str, **env: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "smsupervise", *flags, "train"]
    with (c.root / f"{host}.out").open("wb") as out, (c.root / f"{host}.err").open("wb") as err:
        return c.popen(host, argv, env=jobs.environment(**env), stdout=out, stderr=err)


def _names(c: Cluster, host: str) -> list[str]:
    return [e["event"] for e in jobs.events(c, host)]


def _training(c: Cluster, host: str) -> bool:
    return any(r.get("msg") == "training" for r in jobs.records(c, host))


def _marker(c: Cluster, host: str, name: str, text: str = "0") -> None:
    (c.base(host) / "input" / name).write_text(text)


@pytest.mark.parametrize("role", ["forge-nokey", "forge-nosecret"])
def test_a_process_that_knows_only_the_job_name_cannot_stop_the_job(
    cluster: Callable[..., Cluster], role: str
) -> None:
    """algo-2's "container" runs a forger that says it is algo-2 of this job, without the key (or
    with all of the job's config but not the mesh secret algo-1 was given), and sends 'failed':
    algo-1 refuses it and its job runs to its own end (exit 0)."""
    c = cluster(2)
    jobs.write_job(c, {"role": role}, script=SCRIPT)
    secret = {"SMSUPERVISE_MESH_SECRET": "only-the-hosts-know"} if role == "forge-nosecret" else {}
    one = _start(c, "algo-1", **secret)
    sleep_until(lambda: _training(c, "algo-1"), timeout=60, what="algo-1 training")
    forger = _start(c, "algo-2", "--fail-fast", "off")
    assert forger.wait(90) == 0, jobs.tail(c, "algo-2")
    assert one.poll() is None, jobs.tail(c, "algo-1")  # still training after the forged report
    _marker(c, "algo-1", "go")
    assert one.wait(60) == 0, jobs.tail(c, "algo-1")
    names = _names(c, "algo-1")
    assert "peer_failed" not in names
    assert "stop_requested" not in names
    refused = [e for e in jobs.events(c, "algo-1") if e["event"] == "mesh_refused"]
    assert any("does not have this job's key" in e["why"] for e in refused), refused


def test_reports_of_wrong_types_are_refused_and_a_valid_one_is_heard(cluster: Callable[..., Cluster]) -> None:
    """A forger with the key sends five reports of wrong types ("headline": 5, "exit_code": "one",
    nested junk): each refused, algo-1 goes on; then the negative twin, a valid 'failed' on the same
    connection: algo-1 stops (exit 143, not 70) with algo-2's rank as the root cause."""
    c = cluster(2)
    jobs.write_job(c, {"role": "forge-junk"}, script=SCRIPT)
    one = _start(c, "algo-1")
    sleep_until(lambda: _training(c, "algo-1"), timeout=60, what="algo-1 training")
    forger = _start(c, "algo-2", "--fail-fast", "off")

    def refused() -> int:
        return _names(c, "algo-1").count("mesh_report_refused")

    sleep_until(lambda: refused() == 5 or one.poll() is not None, timeout=60, what="five refusals")
    assert one.poll() is None, jobs.tail(c, "algo-1")
    assert "stop_requested" not in _names(c, "algo-1")
    _marker(c, "algo-2", "send-valid")
    assert one.wait(60) == 143, jobs.tail(c, "algo-1")
    assert forger.wait(60) == 0, jobs.tail(c, "algo-2")
    failed = [e for e in jobs.events(c, "algo-1") if e["event"] == "peer_failed"]
    assert [(e["host"], e["rank"]) for e in failed] == [("algo-2", 5)]
    assert jobs.failure(c, "algo-1").startswith(
        "First failure in the cluster: rank 5 (local_rank 1) on algo-2"
    )


def _fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


HOLDER = r"""
import select, socket, sys, time

def opened(source):
    s = socket.socket()
    s.bind((source, 0))
    s.setblocking(False)
    s.connect_ex(("10.77.0.1", 7778))
    return s

held = {opened(source): source for source in sys.argv[1:] for _ in range(300)}
pending = list(held)
while pending:  # every connect completed (accepted, or refused and closed: either way done)
    _, ready, _ = select.select([], pending, [], 5)
    pending = [s for s in pending if s not in ready]
print("holding", len(held), flush=True)
while True:  # whatever algo-1 closes is opened again: 300 per address at all times
    readable, _, _ = select.select(list(held), [], [], 0.2)
    for s in readable:
        try:
            gone = s.recv(65536) == b""
        except OSError:
            gone = True
        if gone:
            source = held.pop(s)
            s.close()
            held[opened(source)] = source
"""


def test_held_connections_leave_a_bounded_fd_count_and_a_working_mesh(
    cluster: Callable[..., Cluster],
) -> None:
    """600 connections held open at algo-1's mesh port, from algo-2's own address and from a
    stranger's: algo-1's smsupervise holds at most PENDING_TOTAL more descriptors than before;
    then algo-2's job fails and algo-1 still hears it at once (the mesh works under the flood)."""
    c = cluster(2)
    subprocess.run(
        ["ip", "-n", c.namespace("algo-2"), "addr", "add", "10.77.0.99/24", "dev", "eth0"], check=True
    )
    jobs.write_job(c, {"role": "wait"}, script=SCRIPT)
    procs = {h: _start(c, h, "--log-level", "debug") for h in c.names}

    def joined() -> bool:
        return all(_training(c, h) for h in c.names) and all(
            "mesh_connected" in _names(c, h) for h in c.names
        )

    sleep_until(joined, timeout=60, what="both hosts training, the mesh joined")
    pid = procs["algo-1"].pid
    before = _fds(pid)
    holder = c.popen(
        "algo-2", [sys.executable, "-c", HOLDER, "10.77.0.2", "10.77.0.99"], stdout=subprocess.PIPE
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().split()[0] == b"holding"
    samples = []
    for _ in range(20):  # while the holder keeps 600 open: what algo-1 holds, 20 times over 2 s
        samples.append(_fds(pid) - before)
        time.sleep(0.1)  # the scenario: sampling a steady flood, not waiting for an event
    assert max(samples) <= PENDING_TOTAL + ACCEPT_BATCH, samples
    assert procs["algo-1"].poll() is None
    _marker(c, "algo-2", "go", "3")  # algo-2's job fails
    assert procs["algo-2"].wait(60) == 3, jobs.tail(c, "algo-2")
    assert procs["algo-1"].wait(60) == 143, jobs.tail(c, "algo-1")
    assert [e["host"] for e in jobs.events(c, "algo-1") if e["event"] == "peer_failed"] == ["algo-2"]
    holder.kill()
    holder.wait()
