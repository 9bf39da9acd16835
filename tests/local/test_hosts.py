"""Several hosts: each its own /opt/ml, name, network namespace and share of a ShardedByS3Key channel."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.local.conftest import channel, model_file, needs_root, netns_prefix, request, run


def _netns() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(netns_prefix())]


@needs_root
@pytest.mark.parametrize("count", [2, 3])
def test_each_host_sees_itself_resolves_the_others_and_gets_its_shard(tmp_path: Path, count: int) -> None:
    """Hosts algo-1..N: own SM_CURRENT_HOST and hostname, eth0, every algo-* resolves; shards add up."""
    data = tmp_path / "objects"
    data.mkdir()
    names = [f"part-{i:02d}.csv" for i in range(7)]
    for name in names:
        (data / name).write_text(name)
    body = request(
        tmp_path,
        "hosts",
        count=count,
        InputDataConfig=[
            channel("sharded", f"file://{data}", distribution="ShardedByS3Key"),
        ],
    )
    result = run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    expected_hosts = [f"algo-{k}" for k in range(1, count + 1)]
    shards = []
    for host in expected_hosts:
        seen = model_file(tmp_path, "hosts", host)
        assert (seen["current_host"], seen["hostname"], seen["pid"]) == (host, host, 1)
        assert seen["eth0"] is True
        assert seen["base"] == "/opt/ml/model"
        assert seen["addresses"] == {h: f"10.200.0.{h.split('-')[1]}" for h in expected_hosts}
        shards.append(seen["shard"])
    assert sorted(name for shard in shards for name in shard) == names  # every object once
    assert all(shards), shards  # nobody left empty with 7 objects
    with tarfile.open(tmp_path / "out" / "probe-hosts" / "output" / "model.tar.gz") as archive:
        assert {f"hosts-{h}.json" for h in expected_hosts} <= set(archive.getnames())  # hosts merged
    assert _netns() == []  # the job's namespaces are gone


@needs_root
def test_one_host_needs_no_network_namespace(tmp_path: Path) -> None:
    """The negative twin: a single host runs in the machine's network, still named algo-1, still PID 1."""
    result = run(tmp_path, request(tmp_path, "hosts"))
    assert result.returncode == 0, result.stderr
    seen = model_file(tmp_path, "hosts")
    assert (seen["hostname"], seen["pid"], seen["addresses"]) == ("algo-1", 1, {"algo-1": "127.0.0.1"})


@pytest.mark.parametrize("isolation", ["userns", "basedir"])
def test_the_fallbacks_run_the_job_and_say_which_they_are(tmp_path: Path, isolation: str) -> None:
    """Without root (forced here): user namespaces, else SAGEMAKER_BASE_DIR; the output says which."""
    result = run(tmp_path, request(tmp_path, "hosts", count=2), "--isolation", isolation)
    assert result.returncode == 0, result.stderr
    assert {"userns": "user namespace", "basedir": "SAGEMAKER_BASE_DIR"}[isolation] in result.stderr
    seen = model_file(tmp_path, "hosts", "algo-2")
    assert seen["current_host"] == "algo-2"
    if isolation == "basedir":
        assert seen["base"] == str(tmp_path / "work" / "hosts" / "algo-2" / "opt_ml" / "model")
        assert seen["addresses"]["algo-1"] is None  # documented: no hosts file without a mount namespace
    else:
        assert (seen["hostname"], seen["pid"]) == ("algo-2", 1)
