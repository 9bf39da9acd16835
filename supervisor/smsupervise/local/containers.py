"""``--image IMAGE``: each host as a container (podman, else docker) instead of namespaces.

Same trees, channels, stop and artifacts as the namespace runner: the host's tree is mounted at
``/opt/ml``, File/FastFile channels read-only over it, Pipe FIFOs come through the tree's mount;
the container is named ``lc-<id>-algo-K`` with host name ``algo-K``, and for N > 1 all share a
network ``lc-<id>`` (a subnet of its own) with a fixed address per host, and every ``algo-K`` in
every container's /etc/hosts from the start to the end (as on the service, where a host that finished
still resolves; a network alias alone vanishes with its container). The image's ENTRYPOINT
runs with ``train`` (or ContainerEntrypoint/ContainerArguments), as ``docker run IMAGE train``
does on the service. The job's environment is the platform's variables plus the request's
Environment (not this machine's). The stop goes through the engine (``kill --signal``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from smsupervise.local import hosts, launch
from smsupervise.local.channels import Staged
from smsupervise.local.console import Console
from smsupervise.local.job import TrainingJob
from smsupervise.local.run import Options, Result, Runner, submit_directory_uri


def engine(command: str | None = None) -> tuple[str, ...]:
    """The engine's command: ``command`` split as a shell would (``--engine``, e.g. ``podman --root
    /var/tmp/store`` or ``docker --context ci``), else ``podman`` if installed, else ``docker``.

    Raises:
        OSError: the command's program, or both engines, are not installed.
    """
    if command:
        argv = tuple(shlex.split(command))
        if not argv or shutil.which(argv[0]) is None:
            raise OSError(f"--engine {command!r}: {argv[0] if argv else 'an empty command'} is not installed")
        return argv
    for name in ("podman", "docker"):
        if shutil.which(name):
            return (name,)
    raise OSError("--image needs podman or docker: install podman (apt-get install podman)")


def submit_directory(job: TrainingJob) -> str | None:
    """The local path in the ``sagemaker_submit_directory`` hyperparameter (JSON-encoded or not), if any."""
    value = submit_directory_uri(job)
    if value is None:
        return None
    path = value[len("file://") :] if value.startswith("file://") else value
    return path if path.startswith("/") else None


@dataclass(frozen=True)
class JobNetwork:
    """The job's network for N > 1 hosts: its name and each host's fixed address."""

    name: str
    addresses: Mapping[str, str]


def create_network(command: tuple[str, ...], name: str, names: list[str]) -> JobNetwork:
    """``network create`` with a /24 of its own (a few random tries, past subnets in use), and an
    address for each host name (.10 upwards).

    Raises:
        OSError: the engine refused every try (its last error).
    """
    error = ""
    for _ in range(8):
        subnet = ipaddress.ip_network(f"10.{secrets.randbelow(100) + 100}.{secrets.randbelow(256)}.0/24")
        argv = [*command, "network", "create", "--subnet", str(subnet), name]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return JobNetwork(name, {host: str(subnet[10 + i]) for i, host in enumerate(names)})
        error = done.stderr.strip()
    raise OSError(f"{shlex.join(command)} network create {name}: {error}")


def run_argv(
    job: TrainingJob,
    image: str,
    name: str,
    plan: launch.HostPlan,
    network: JobNetwork | None,
    *,
    command: tuple[str, ...] = ("podman",),
) -> list[str]:
    """``podman run`` for one host (``command``: the engine's command, see ``engine``)."""
    argv = [*command, "run", "--rm", "--name", name, "--hostname", plan.host.name]
    if network is not None:
        me = plan.host.name
        argv += ["--network", network.name, "--network-alias", me, "--ip", network.addresses[me]]
        argv += [arg for h, ip in network.addresses.items() if h != me for arg in ("--add-host", f"{h}:{ip}")]
    argv += ["-v", f"{plan.tree}:/opt/ml"]
    argv += [arg for b in plan.staged.binds for arg in ("-v", f"{b.source}:/opt/ml/{b.target}:ro")]
    source = submit_directory(job)
    if source is not None:  # the source dir or tarball, at the same path inside (no rewriting needed)
        argv += ["-v", f"{source}:{source}:ro"]
    platform = {k: v for k, v in plan.env.items() if k.startswith("TRAINING_JOB_")}
    for key, value in {**platform, **job.environment}.items():
        argv += ["-e", f"{key}={value}"]
    if job.entrypoint:
        argv += ["--entrypoint", orjson.dumps(list(job.entrypoint)).decode()]
        return [*argv, image, *job.arguments]
    return [*argv, image, *(job.arguments or ("train",))]


class ContainerHost(launch.HostProcess):
    """A host running as a container; its PID 1 is reached through the engine."""

    def __init__(self, plan: launch.HostPlan, argv: list[str], name: str, command: tuple[str, ...]) -> None:
        self.name, self.command = name, command
        super().__init__(
            launch.HostPlan(plan.host, plan.tree, plan.base, plan.staged, tuple(argv), plan.env), "basedir"
        )

    def signal(self, signum: int) -> None:
        """``podman kill --signal N NAME``: the container's PID 1 gets the signal."""
        subprocess.run(
            [*self.command, "kill", "--signal", str(signum), self.name], capture_output=True, check=False
        )


class ContainerRunner(Runner):
    """The runner with containers for hosts."""

    def __init__(
        self, job: TrainingJob, options: Options, console: Console, image: str, command: tuple[str, ...]
    ) -> None:
        super().__init__(job, options, console)
        self.image, self.command = image, command
        self.prefix = f"{hosts.PREFIX}{secrets.token_hex(3)}"
        self.network: JobNetwork | None = None

    def _isolation(self) -> hosts.Isolation:
        return "basedir"  # no namespaces of ours: the engine makes them

    def _isolation_note(self, mode: hosts.Isolation) -> str:
        return (
            f"each host is a container of {self.image} ({shlex.join(self.command)}), its tree mounted "
            "at /opt/ml, channels read-only"
        )

    def _prepare(
        self, host: hosts.Host, mode: hosts.Isolation, root: str, staged: Staged, hosts_file: str
    ) -> launch.HostPlan:
        if self.job.instance_count > 1 and self.network is None:
            names = [f"algo-{k}" for k in range(1, self.job.instance_count + 1)]
            self.network = create_network(self.command, self.prefix, names)
        env = launch.job_env(self.job, "/opt/ml")
        return launch.HostPlan(host, root, "/opt/ml", staged, (), env)

    def _start(self, plan: launch.HostPlan, mode: hosts.Isolation) -> launch.HostProcess:
        name = f"{self.prefix}-{plan.host.name}"
        argv = run_argv(self.job, self.image, name, plan, self.network, command=self.command)
        return ContainerHost(plan, argv, name, self.command)

    def run(self) -> Result:
        """Run, then remove the job's network."""
        try:
            return super().run()
        finally:
            if self.network is not None:
                with contextlib.suppress(OSError):
                    subprocess.run(
                        [*self.command, "network", "rm", self.network.name], capture_output=True, check=False
                    )
