"""Fixtures for the multi-host tests: a cluster of namespaced hosts, torch and MPI availability."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.distributed import hosts

HOSTS_PROBLEM = hosts.problem()
needs_hosts = pytest.mark.skipif(HOSTS_PROBLEM is not None, reason=f"namespaced hosts: {HOSTS_PROBLEM}")
needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="PyTorch is not installed (run `make torch`)"
)
needs_mpi = pytest.mark.skipif(
    shutil.which("mpirun") is None
    or not Path("/usr/sbin/sshd").exists()
    or importlib.util.find_spec("mpi4py") is None,
    reason="Open MPI, openssh-server or mpi4py is missing (`make mpi`)",
)
needs_ssh_keygen = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None or shutil.which("ssh") is None,
    reason="openssh-client is missing (`make mpi`)",
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., hosts.Cluster]]:
    """Make clusters of namespaced hosts; all of them are torn down after the test, pass or fail."""
    made: list[hosts.Cluster] = []

    def make(n: int, resolvable: int | None = None, ssh: bool = False) -> hosts.Cluster:
        made.append(hosts.Cluster(n, tmp_path / f"cluster{len(made)}", resolvable, ssh))
        return made[-1]

    try:
        yield make
    finally:
        for c in made:
            c.close()
