"""The runners' argv and variables, from the toolkit's rules (the differential test checks them
against the real toolkit too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from smsupervise.distributed import cluster, launchers, mpi, torchrun
from smsupervise.distributed.topology import Topology, from_variables, processes_per_host
from smsupervise.errors import ConfigError


def topo(hosts: int = 2, current: int = 1, **changes: Any) -> Topology:
    names = tuple(f"algo-{i}" for i in range(1, hosts + 1))
    base = Topology(names, names, names[current - 1], names[0], "eth0", "ml.m5.xlarge", 0, 0, {})
    return base._replace(**changes)


def job(code_dir: str, entry: str = "train.py") -> launchers.JobFacts:
    return launchers.JobFacts(
        entry, ("--epochs", "2"), code_dir, "/usr/bin/python3", ("SM_HOSTS",), "g", ("g",)
    )


def test_topology_comes_from_sm_training_env() -> None:
    """Hosts, master, interface and node rank are read from SM_TRAINING_ENV."""
    props = {
        "hosts": ["algo-1", "algo-2", "algo-3"],
        "distribution_hosts": ["algo-2", "algo-3"],
        "current_host": "algo-3",
        "master_hostname": "algo-2",
        "network_interface_name": "eth1",
        "current_instance_type": "ml.p4d.24xlarge",
        "num_gpus": 8,
        "num_neurons": 0,
        "additional_framework_parameters": {"sagemaker_torch_distributed_enabled": True},
    }
    t = from_variables({"SM_TRAINING_ENV": json.dumps(props)})
    assert (t.master, t.node_rank, t.interface, t.peers) == ("algo-2", 1, "eth1", ("algo-1", "algo-2"))
    assert not t.is_master


def test_a_host_outside_the_distribution_groups_has_no_node_rank() -> None:
    """The toolkit's .index() ValueError becomes an error naming the field and the fix."""
    with pytest.raises(ConfigError, match="sagemaker_distribution_instance_groups"):
        _ = topo(current=2, distribution_hosts=("algo-1",)).node_rank


@pytest.mark.parametrize(
    ("gpus", "neurons", "wanted", "expected"),
    [(0, 0, None, 1), (8, 0, None, 8), (0, 32, None, 32), (8, 0, 3, 3)],
)
def test_processes_per_host(gpus: int, neurons: int, wanted: int | None, expected: int) -> None:
    """The hyperparameter, else GPUs, else Neuron cores, else 1."""
    framework = {"sagemaker_mpi_num_of_processes_per_host": wanted} if wanted else {}
    assert processes_per_host(topo(num_gpus=gpus, num_neurons=neurons, framework=framework)) == expected


def test_torchrun_multi_node_argv(tmp_path: Path) -> None:
    """Two hosts: --nnodes, --nproc_per_node, then master address, port 7777 and node rank."""
    argv = torchrun.command(topo(current=2, num_gpus=4), "train.py", ["--lr", "1"], str(tmp_path), {})
    assert argv == (
        "torchrun", "--nnodes", "2", "--nproc_per_node", "4", "--master_addr", "algo-1",
        "--master_port", "7777", "--node_rank", "1", "train.py", "--lr", "1",
    )  # fmt: skip


def test_torchrun_single_node_has_no_master_options(tmp_path: Path) -> None:
    """One host: no --master_addr; neuron_parallel_compile first when asked for."""
    argv = torchrun.command(topo(hosts=1), "t.py", [], str(tmp_path), {"RUN_NEURON_PARALLEL_COMPILE": "1"})
    assert argv == ("neuron_parallel_compile", "torchrun", "--nnodes", "1", "--nproc_per_node", "1", "t.py")


def test_torchrun_variables_by_instance_type() -> None:
    """NCCL_SOCKET_IFNAME and NCCL_PROTO always; EFA variables on EFA instances only."""
    assert torchrun.variables(topo()) == {"NCCL_SOCKET_IFNAME": "eth0", "NCCL_PROTO": "simple"}
    efa = torchrun.variables(topo(instance_type="ml.p4d.24xlarge"))
    assert efa["FI_PROVIDER"] == "efa"
    assert efa["FI_EFA_USE_DEVICE_RDMA"] == "1"
    assert efa["RDMAV_FORK_SAFE"] == "1"
    assert "RDMAV_FORK_SAFE" not in torchrun.variables(topo(instance_type="ml.g5.48xlarge"))


@pytest.mark.parametrize(("entry", "package", "words"), [
    ("train.sh", False, "Unsupported entry point type"),
    ("train", False, "Unsupported entry point type"),
    ("train.py", True, "Python packages are not supported"),
])  # fmt: skip
def test_torchrun_refuses_what_the_toolkit_refuses(
    tmp_path: Path, entry: str, package: bool, words: str
) -> None:
    """A shell script, another command or a package is refused with the toolkit's reason."""
    if package:
        (tmp_path / "setup.py").write_text("")
    with pytest.raises(ConfigError, match=words):
        torchrun.command(topo(), entry, [], str(tmp_path), {})


def test_mpi_master_argv(tmp_path: Path) -> None:
    """The toolkit's mpirun options, custom options after the fixed ones, -x per job variable, mpi4py."""
    framework = {
        "sagemaker_mpi_num_of_processes_per_host": 2,
        "sagemaker_mpi_custom_mpi_options": "--NCCL_DEBUG WARN -v",
    }
    t = topo(framework=framework)
    program = mpi.program("/py", "train.py", ["--a", "1"], str(tmp_path))
    argv = mpi.command(t, ["SM_HOSTS", "PYTHONPATH"], {"AWS_SESSION_TOKEN": "x"}, program, None)
    assert argv[:6] == ("mpirun", "--host", "algo-1:2,algo-2:2", "-np", "4", "--allow-run-as-root")
    assert "NCCL_DEBUG=WARN" in argv
    assert argv[argv.index("PATH") + 1] == "-v"
    assert argv[-12:] == (
        "-x", "AWS_SESSION_TOKEN", "-x", "SM_HOSTS", "-x", "PYTHONPATH",
        "/py", "-m", "mpi4py", "train.py", "--a", "1",
    )  # fmt: skip
    assert not any(a.startswith("LD_PRELOAD") for a in argv)


def test_mpi_one_process_per_host_lists_bare_hosts(tmp_path: Path) -> None:
    """With one process per host the host list has no ':P'; sagemaker_mpi_num_processes wins for -np."""
    t = topo(framework={"sagemaker_mpi_num_processes": 5})
    argv = mpi.command(t, [], {}, ["x"], "/lib/gethostname.so")
    assert argv[2:5] == ("algo-1,algo-2", "-np", "5")
    assert "LD_PRELOAD=/lib/gethostname.so" in argv


def test_mpi_shell_entry_runs_through_sh(tmp_path: Path) -> None:
    """A .sh entry point is run as the toolkit's ProcessRunner does: /bin/sh -c './entry args'."""
    assert mpi.program("/py", "run.sh", ["a b"], str(tmp_path)) == ["/bin/sh", "-c", "./run.sh 'a b'"]


def test_launcher_choice(tmp_path: Path) -> None:
    """MPI wins over torchrun; the worker runs sshd; no flag means the plain process runner."""
    both = {"sagemaker_mpi_enabled": True, "sagemaker_torch_distributed_enabled": True}
    assert launchers.choose(topo(framework=both), job(str(tmp_path)), {}, {}).runner == "mpi-master"  # type: ignore[union-attr]
    worker = launchers.choose(topo(current=2, framework=both), job(str(tmp_path)), {}, {})
    assert worker is not None
    assert worker.argv == ("/usr/sbin/sshd", "-D")
    torch = launchers.choose(
        topo(framework={"sagemaker_torch_distributed_enabled": True}), job(str(tmp_path)), {}, {}
    )
    assert torch is not None
    assert torch.agent == "torchrun"
    assert torch.world_size == 2
    assert launchers.choose(topo(), job(str(tmp_path)), {}, {}) is None


def test_smdataparallel_without_its_launcher_is_refused(tmp_path: Path) -> None:
    """A runner that needs SageMaker-only software names what is missing (exit 2)."""
    t = topo(framework={"sagemaker_distributed_dataparallel_enabled": True})
    with pytest.raises(ConfigError, match="smddprun") as caught:
        launchers.choose(t, job(str(tmp_path)), {}, {})
    assert caught.value.exit_code == 2


def test_the_first_failed_rank_from_the_launchers_summary() -> None:
    """torchrun's Root Cause block and mpirun's MPI_ABORT / Process name lines name the rank; else None."""
    from smsupervise.distributed.attribution import FailedRank, first_failed

    torchrun_tail = (
        b"Root Cause (first observed failure):\n[0]:\n  time : x\n  host : a\n"
        b"  rank : 3 (local_rank: 1)\n  exitcode : 1 (pid: 9)\n"
    )
    assert first_failed(torchrun_tail, 2) == FailedRank(3, 1, 1)
    assert first_failed(b"MPI_ABORT was invoked on rank 5 in communicator", 4) == FailedRank(5, 1, None)
    assert first_failed(b"Process name: [[1234,1],2]\nExit code: 1", 2) == FailedRank(2, 0, None)
    assert first_failed(b"Traceback: nothing about ranks", 2) is None


def _cluster_plan(tmp_path: Path, framework: dict[str, Any], **env: str) -> Any:
    props = {"hosts": ["algo-1", "algo-2"], "distribution_hosts": ["algo-1", "algo-2"],
             "current_host": "algo-1", "master_hostname": "algo-1",
             "additional_framework_parameters": framework}  # fmt: skip
    child_env = {"SM_TRAINING_ENV": json.dumps(props), **env}
    on_path = {"torchrun": True, "mpirun": True}
    options = cluster.ClusterOptions()
    return cluster.decide(child_env, {}, job(str(tmp_path)), options, on_path, str(tmp_path), "run-1")


def test_torchrun_ranks_are_watched_when_torchrun_does_not_restart_them(tmp_path: Path) -> None:
    """torchrun as the toolkit runs it (no restarts): a failed rank fails the host, so it is watched."""
    plan = _cluster_plan(tmp_path, {"sagemaker_torch_distributed_enabled": True})
    assert plan.watch_ranks is True
    assert _cluster_plan(
        tmp_path, {"sagemaker_torch_distributed_enabled": True}, PET_MAX_RESTARTS="0"
    ).watch_ranks


def test_ranks_are_not_watched_when_restarted_or_under_mpi(tmp_path: Path) -> None:
    """The negative twin: with PET_MAX_RESTARTS a failed rank may come back; MPI's ranks are not ours."""
    torch = {"sagemaker_torch_distributed_enabled": True}
    assert _cluster_plan(tmp_path, torch, PET_MAX_RESTARTS="2").watch_ranks is False
    assert _cluster_plan(tmp_path, {"sagemaker_mpi_enabled": True}).watch_ranks is False


def test_xla_spawn_argv_and_variables(tmp_path: Path) -> None:
    """The toolkit's PT-XLA runner: python -m xla_spawn --num_gpus G, this host's XRT ordinal and the
    master's mesh service."""
    t = topo(current=2, num_gpus=4, framework={"sagemaker_pytorch_xla_multi_worker_enabled": True})
    launch = launchers.choose(t, job(str(tmp_path)), {}, {})
    assert launch is not None
    spawn = ("-m", "torch_xla.distributed.xla_spawn", "--num_gpus", "4")
    assert launch.argv == ("/usr/bin/python3", *spawn, "train.py", "--epochs", "2")
    assert (launch.runner, launch.processes_per_host, launch.world_size) == ("xla", 4, 8)
    assert launch.env["XRT_HOST_ORDINAL"] == "1"
    assert launch.env["XRT_WORKERS"] == "localservice:0;algo-1:43857|localservice:1;algo-2:43857"
    assert launch.env["XRT_MESH_SERVICE_ADDRESS"] == "algo-1:53957"
    one = launchers.choose(topo(hosts=1, num_gpus=1, framework=t.framework), job(str(tmp_path)), {}, {})
    assert one is not None
    assert "XRT_MESH_SERVICE_ADDRESS" not in one.env


def test_xla_refuses_what_the_toolkit_refuses(tmp_path: Path) -> None:
    """The negative twin: no GPUs, a package or a shell entry point: exit 2 with the toolkit's reason."""
    flags = {"sagemaker_pytorch_xla_multi_worker_enabled": True}
    with pytest.raises(ConfigError, match="only supported for GPUs"):
        launchers.choose(topo(framework=flags), job(str(tmp_path)), {}, {})
    with pytest.raises(ConfigError, match="only supported for Python scripts"):
        launchers.choose(topo(num_gpus=1, framework=flags), job(str(tmp_path), "run.sh"), {}, {})
    (tmp_path / "setup.py").write_text("")
    with pytest.raises(ConfigError, match="not supported for Python packages"):
        launchers.choose(topo(num_gpus=1, framework=flags), job(str(tmp_path)), {}, {})


def test_smdataparallel_master_and_worker(tmp_path: Path) -> None:
    """smddprun installed: the master's mpirun runs smddprun before python -m mpi4py, one host in
    SINGLENODE mode without a server address; any other host runs sshd."""
    flags = {"sagemaker_distributed_dataparallel_enabled": True}
    one = launchers.choose(topo(hosts=1, framework=flags), job(str(tmp_path)), {}, {"smddprun": True})
    assert one is not None
    assert one.runner == "mpi-master"
    assert one.argv[:5] == ("mpirun", "--host", "algo-1", "-np", "1")
    assert "SMDATAPARALLEL_USE_SINGLENODE=1" in one.argv
    assert not any(a.startswith("SMDATAPARALLEL_SERVER_ADDR=") for a in one.argv)
    assert one.argv[one.argv.index("smddprun") :] == (
        "smddprun", "/usr/bin/python3", "-m", "mpi4py", "train.py", "--epochs", "2"
    )  # fmt: skip
    worker = launchers.choose(topo(current=2, framework=flags), job(str(tmp_path)), {}, {"smddprun": True})
    assert worker is not None
    assert (worker.runner, worker.argv) == ("mpi-worker", ("/usr/sbin/sshd", "-D"))


def test_a_torchrun_plan_is_the_same_for_the_same_inputs(tmp_path: Path) -> None:
    """decide() is pure: two calls with the same inputs and run token name the same rank-log dir (what
    ``inspect`` shows is what the run uses); another token, another dir."""
    torch = {"sagemaker_torch_distributed_enabled": True}
    first, second = _cluster_plan(tmp_path, torch), _cluster_plan(tmp_path, torch)
    assert first is not None
    assert first == second
    assert first.rank_log_dir == str(tmp_path / "smsupervise-ranks-run-1")
