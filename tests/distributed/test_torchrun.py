"""torchrun as the toolkit starts it, on namespaced hosts, with PyTorch CPU and gloo."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable

import pytest

from tests.conftest import HELPERS
from tests.distributed import jobs
from tests.distributed.conftest import needs_hosts, needs_torch
from tests.distributed.hosts import Cluster

pytestmark = [needs_hosts, needs_torch, pytest.mark.slow]
TWO_PER_HOST = {
    "sagemaker_torch_distributed_enabled": True,
    "sagemaker_mpi_num_of_processes_per_host": 2,
    "steps": 3,
}


@pytest.mark.parametrize(("hosts", "per_host"), [(2, 2), (3, 1)])
def test_ddp_trains_to_the_single_process_weights(
    cluster: Callable[..., Cluster], hosts: int, per_host: int
) -> None:
    """Every rank saw the right RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR; the weights equal one process's."""
    with warnings.catch_warnings():  # torch warns that numpy is missing; it is not needed here
        warnings.simplefilter("ignore")
        import torch

    c = cluster(hosts)
    hps = {"sagemaker_torch_distributed_enabled": True, "sagemaker_mpi_num_of_processes_per_host": per_host}
    jobs.write_job(c, {**hps, "steps": 15})
    codes = jobs.wait_all(jobs.start_all(c), 90)
    assert codes == dict.fromkeys(c.names, 0), jobs.tail(c, "algo-1")
    world = hosts * per_host
    for index, host in enumerate(c.names):
        for local in range(per_host):
            rank = index * per_host + local
            seen = jobs.json.loads((c.base(host) / "output" / "data" / f"rank-{rank}.json").read_text())
            assert seen == {
                "RANK": str(rank), "LOCAL_RANK": str(local), "WORLD_SIZE": str(world),
                "MASTER_ADDR": "algo-1", "MASTER_PORT": "7777", "hostname": host,
            }  # fmt: skip
        assert (c.base(host) / "output" / "success").exists()
    chosen = next(e for e in jobs.events(c, "algo-2") if e["event"] == "runner_chosen")
    assert chosen["argv"][:9] == ["torchrun", "--nnodes", str(hosts), "--nproc_per_node", str(per_host),
                                  "--master_addr", "algo-1", "--master_port", "7777"]  # fmt: skip
    single = c.root / "single"
    env = {"PATH": jobs.VENV_BIN, "SMSUPERVISE_CHECKPOINT_DIR": str(single)}
    argv = [sys.executable, str(HELPERS / "ddp_train.py"), "--steps", "15", "--out", str(single)]
    subprocess.run(argv, check=True, capture_output=True, env=env)
    ddp = torch.load(c.base("algo-1") / "output" / "data" / "weights.pt")
    alone = torch.load(single / "weights.pt")
    assert ddp.keys() == alone.keys()
    for key in ddp:
        assert torch.allclose(ddp[key], alone[key], atol=1e-5), key


def test_rank_records_carry_rank_local_rank_and_host(cluster: Callable[..., Cluster]) -> None:
    """Each rank's lines are JSON records with rank, local_rank and host; --ranks 0 keeps only rank 0's."""
    c = cluster(2)
    jobs.write_job(
        c,
        {
            "sagemaker_torch_distributed_enabled": True,
            "sagemaker_mpi_num_of_processes_per_host": 2,
            "steps": 3,
        },
    )
    tmp = c.root / "tmp"
    tmp.mkdir()
    codes = jobs.wait_all(jobs.start_all(c, env=jobs.environment(TMPDIR=str(tmp))), 90)
    assert codes == {"algo-1": 0, "algo-2": 0}, jobs.tail(c, "algo-2")
    assert not list(tmp.glob("smsupervise-ranks-*"))  # the rank files (PET_LOG_DIR) were ours: removed
    assert not list(tmp.glob("torchelastic_*"))
    mine = [r for r in jobs.records(c, "algo-2") if r.get("msg", "").startswith("rank ")]
    assert sorted((r["rank"], r["local_rank"], r["host"]) for r in mine) == [
        (2, 0, "algo-2"),
        (3, 1, "algo-2"),
    ]
    assert all(r["msg"] == f"rank {r['rank']} of 4 on algo-2" for r in mine)
    c2 = cluster(2)
    jobs.write_job(
        c2,
        {
            "sagemaker_torch_distributed_enabled": True,
            "sagemaker_mpi_num_of_processes_per_host": 2,
            "steps": 3,
        },
    )
    codes = jobs.wait_all(jobs.start_all(c2, "--ranks", "0"), 90)
    assert codes == {"algo-1": 0, "algo-2": 0}
    shown = {r.get("rank") for h in c2.names for r in jobs.records(c2, h) if "rank" in r}
    assert shown == {0}


def test_a_pet_log_dir_of_your_own_is_kept(cluster: Callable[..., Cluster]) -> None:
    """The negative twin of the removal: a PET_LOG_DIR set for the job is the user's, left as it is."""
    c = cluster(2)
    jobs.write_job(c, {"sagemaker_torch_distributed_enabled": True, "steps": 1})
    mine = c.root / "mine"
    env = jobs.environment(PET_LOG_DIR=str(mine), PET_REDIRECTS="3")
    codes = jobs.wait_all(jobs.start_all(c, env=env), 90)
    assert codes == {"algo-1": 0, "algo-2": 0}, jobs.tail(c, "algo-2")
    assert len(list(mine.glob("*/attempt_0/0/stdout.log"))) == 2  # one run directory per host
