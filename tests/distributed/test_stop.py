"""A stop reaches the ranks: the checkpoint hook once per host, SIGTERM to torchrun's ranks before
torchrun itself, every rank saves the same step, and the resumed job ends with the weights of a run
that was never stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
import warnings
from collections.abc import Callable

import pytest

from tests.conftest import HELPERS, sleep_until
from tests.distributed import jobs
from tests.distributed.conftest import needs_hosts, needs_torch
from tests.distributed.hosts import Cluster

pytestmark = [needs_hosts, needs_torch, pytest.mark.slow]
JOB = {"sagemaker_torch_distributed_enabled": True, "steps": 120}


def test_stop_with_a_checkpoint_hook_and_resume(cluster: Callable[..., Cluster]) -> None:
    """SIGTERM to both hosts mid-training: hook, ranks first, same step saved; the resume matches."""
    with warnings.catch_warnings():  # torch warns that numpy is missing; it is not needed here
        warnings.simplefilter("ignore")
        import torch

    c = cluster(2)
    jobs.write_job(c, {**JOB, "step-seconds": 0.1})
    hook = "sh -c 'echo checkpoint hook on $SM_CURRENT_HOST'"
    procs = jobs.start_all(c, "--checkpoint-hook", hook, "--checkpoint-timeout", "10", "--grace-period", "30")

    def training() -> bool:
        return all(any("first step" in r.get("msg", "") for r in jobs.records(c, h)) for h in c.names)

    sleep_until(training, timeout=60, interval=0.2, what="every rank's first step")
    for p in procs.values():
        p.send_signal(signal.SIGTERM)  # the platform stops every instance
    assert jobs.wait_all(procs, 60) == {"algo-1": 0, "algo-2": 0}, jobs.tail(c, "algo-2")
    saved = {}
    for host in c.names:
        events = jobs.events(c, host)
        names = [e["event"] for e in events]
        assert names.count("checkpoint_hook_started") == 1
        forwarded = [e["target"] for e in events if e["event"] == "signal_forwarded"]
        assert forwarded[0].startswith("the launcher's ranks: process groups")
        said = [r["msg"] for r in jobs.records(c, host) if r.get("msg", "").startswith("saved at step")]
        assert len(said) == 1
        saved[host] = said[0]
        assert "peer_failed" not in names  # a stopped peer is not a failed one
    assert saved["algo-1"] == saved["algo-2"]
    jobs.write_job(c, JOB)  # the same job again, at full speed: it resumes from the checkpoints
    assert jobs.wait_all(jobs.start_all(c), 90) == {"algo-1": 0, "algo-2": 0}, jobs.tail(c, "algo-1")
    assert any(r.get("msg", "").startswith("resumed at step") for r in jobs.records(c, "algo-2"))
    single = c.root / "single"
    env = {"PATH": jobs.VENV_BIN, "SMSUPERVISE_CHECKPOINT_DIR": str(single)}
    argv = [sys.executable, str(HELPERS / "ddp_train.py"), "--steps", "120", "--out", str(single)]
    subprocess.run(argv, check=True, capture_output=True, env=env)
    resumed = torch.load(c.base("algo-1") / "output" / "data" / "weights.pt")
    alone = torch.load(single / "weights.pt")
    for key in alone:
        assert torch.allclose(resumed[key], alone[key], atol=1e-5), key
