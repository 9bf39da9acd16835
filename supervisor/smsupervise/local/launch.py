"""Starting one host's job and signalling its PID 1: in namespaces (``hosts``), or as a container.

``prepare`` turns a host's staged plan into the spec ``enter`` executes (mounts, host name, argv,
environment) and the launcher command; ``HostProcess`` owns the running launcher, its output pipes
and the way to reach the host's PID 1 (``signal``). A launcher dies with the runner: a runner
killed outright (SIGKILL, OOM) leaves no host running.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from smsupervise.distributed import meshkey
from smsupervise.local import hosts
from smsupervise.local.channels import Staged
from smsupervise.local.job import TrainingJob


@dataclass(frozen=True, slots=True)
class HostPlan:
    """Everything needed to start one host."""

    host: hosts.Host
    tree: str  # the host's /opt/ml on this machine
    base: str  # the host's /opt/ml as its job sees it
    staged: Staged
    argv: tuple[str, ...]  # the launcher command
    env: Mapping[str, str]  # the job's environment


def job_argv(job: TrainingJob) -> list[str]:
    """What runs as PID 1: ContainerEntrypoint + ContainerArguments, else ``smsupervise train``.

    ContainerArguments alone replace the image's CMD (``train``), as on the service.
    """
    if job.entrypoint:
        return [*job.entrypoint, *job.arguments]
    return [sys.executable, "-m", "smsupervise", *(job.arguments or ("train",))]


def job_env(job: TrainingJob, base: str) -> dict[str, str]:
    """The job's environment: ours, the platform's variables, the request's Environment."""
    env = dict(os.environ)
    env["TRAINING_JOB_NAME"] = job.name
    region = job.environment.get("AWS_REGION") or "us-east-1"
    env["TRAINING_JOB_ARN"] = f"arn:aws:sagemaker:{region}:000000000000:training-job/{job.name.lower()}"
    if base != "/opt/ml":
        env["SAGEMAKER_BASE_DIR"] = base
        # No network namespaces here: the other hosts' names cannot resolve, so skip the wait for
        # them as the toolkit does in the SDK's local mode (the distributed issue's peer wait).
        env["SM_STUDIO_LOCAL_MODE"] = "true"
    # The mesh's secret (meshkey.py): one per run, the same for every host; the request's wins.
    env[meshkey.SECRET_VARIABLE] = _run_secret()
    env.update(job.environment)
    return env


@functools.cache
def _run_secret() -> str:
    """A random secret for this run's hosts (one run per smsupervise-local process)."""
    return secrets.token_hex(32)


def _binds(plan_tree: str, base: str, staged: Staged, hosts_file: str | None) -> list[list[object]]:
    binds: list[list[object]] = []
    if base == "/opt/ml":
        binds.append([plan_tree, "/opt/ml", False])
    binds += [[b.source, os.path.join(base, b.target), True, b.overlay] for b in staged.binds]
    binds += [[guard, guard, True, None] for guard in staged.guards]  # after the overlays over them
    if hosts_file is not None:
        binds.append([hosts_file, "/etc/hosts", True])
    return binds


def _link_channels(tree: str, staged: Staged) -> None:
    for bind in staged.binds:  # basedir mode: no mount namespace, so a symlink (not read-only)
        link = os.path.join(tree, bind.target)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(bind.source, link)


def prepare(
    job: TrainingJob, host: hosts.Host, mode: hosts.Isolation, *, tree: str, staged: Staged, hosts_file: str
) -> HostPlan:
    """Write the host's enter spec and return its plan (the job's /opt/ml is ``base``)."""
    base = "/opt/ml" if mode == "root" or (mode == "userns" and os.path.isdir("/opt/ml")) else tree
    if base == "/opt/ml":
        os.makedirs("/opt/ml", exist_ok=True)  # the mount point (SageMaker reserves /opt/ml)
    env = job_env(job, base)
    spec: dict[str, object] = {"argv": job_argv(job), "env": env, "cwd": "/"}
    if mode == "basedir":
        _link_channels(tree, staged)
        spec["binds"] = []
    else:
        spec["hostname"] = host.name
        spec["binds"] = _binds(tree, base, staged, hosts_file)
    spec_path = os.path.join(os.path.dirname(tree), "enter.json")
    fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)  # it holds the env
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(spec))
    argv = hosts.host_argv(host, mode, [sys.executable, "-m", "smsupervise.local.enter", spec_path])
    return HostPlan(host, tree, base, staged, tuple(argv), env)


def dying_with_us(argv: tuple[str, ...]) -> list[str]:
    """``argv`` made to get SIGKILL when the runner dies, however it dies (``setpriv --pdeathsig``;
    the launcher execs, so the signal stays with it; ``unshare --kill-child`` then kills the host's
    PID 1 and so its whole PID namespace). As it is where util-linux's setpriv is missing."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else list(argv)


class HostProcess:
    """A running host: the launcher process, its stdout/stderr pipes, and its PID 1. The launcher
    is started by the runner's main thread (the parent-death signal follows the thread)."""

    def __init__(self, plan: HostPlan, mode: str) -> None:
        self.plan, self.mode = plan, mode
        self.process = subprocess.Popen(
            dying_with_us(plan.argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=plan.env,
        )

    def pid1(self) -> int | None:
        """The host's PID 1 seen from here (the launcher itself without namespaces)."""
        if self.mode == "basedir":
            return self.process.pid
        return hosts.pid1(self.process.pid)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the host's PID 1 (SIGKILL also takes the launcher down)."""
        target = self.pid1()
        with contextlib.suppress(ProcessLookupError):
            if target is not None:
                os.kill(target, signum)
            if signum == signal.SIGKILL or target is None:
                os.kill(self.process.pid, signum)
