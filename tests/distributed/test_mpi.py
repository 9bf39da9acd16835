"""The toolkit's MPI runner on 2 namespaced hosts: real Open MPI, mpi4py and sshd in each host."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.conftest import HELPERS
from tests.distributed import jobs
from tests.distributed.conftest import needs_hosts, needs_mpi, needs_ssh_keygen
from tests.distributed.hosts import Cluster

pytestmark = [needs_hosts, needs_mpi, needs_ssh_keygen, pytest.mark.slow]
JOB = {"sagemaker_mpi_enabled": True, "sagemaker_mpi_num_of_processes_per_host": 2}


def test_an_mpi_job_runs_on_two_hosts_and_the_worker_reports_the_real_outcome(
    cluster: Callable[..., Cluster],
) -> None:
    """mpirun on algo-1 starts 2 ranks per host over ssh; algo-2 (sshd) ends with the master's success."""
    c = cluster(2, ssh=True)
    jobs.write_job(c, JOB, HELPERS / "mpi_train.py")
    codes = jobs.wait_all(jobs.start_all(c), 80)
    assert codes == {"algo-1": 0, "algo-2": 0}, (jobs.tail(c, "algo-1"), jobs.tail(c, "algo-2"))
    for index, host in enumerate(c.names):
        for local in range(2):
            rank = index * 2 + local
            seen = json.loads((c.base(host) / "output" / "data" / f"mpi-rank-{rank}.json").read_text())
            assert (seen["size"], seen["host"], seen["sum"]) == (4, host, 10)
        assert (c.base(host) / "output" / "success").exists()
    worker = [e["event"] for e in jobs.events(c, "algo-2")]
    assert "mpi_master_finished" in worker
    said = [r for r in jobs.records(c, "algo-1") if str(r.get("msg", "")).startswith("rank ")]
    assert sorted((r["rank"], r["local_rank"], r["host"]) for r in said) == [
        (0, 0, "algo-1"), (1, 1, "algo-1"), (2, 0, "algo-2"), (3, 1, "algo-2"),
    ]  # fmt: skip


def test_a_failed_mpi_job_fails_the_worker_too(cluster: Callable[..., Cluster]) -> None:
    """The negative twin of the toolkit's always-successful workers: rank 3 raises, both hosts fail."""
    c = cluster(2, ssh=True)
    jobs.write_job(c, {**JOB, "fail-rank": 3}, HELPERS / "mpi_train.py")
    codes = jobs.wait_all(jobs.start_all(c), 80)
    assert codes["algo-1"] != 0
    assert codes["algo-2"] != 0
    assert not (c.base("algo-2") / "output" / "success").exists()
    for host in c.names:
        assert "rank 3 (local_rank 1)" in jobs.failure(c, host).splitlines()[0]
        assert "ValueError: rank 3 fails on purpose" in jobs.failure(c, host)
