"""A small cluster of "hosts" on one machine: one network namespace per host (named ``ds-<tag>-<n>``)
with a veth called ``eth0`` on a shared bridge (in ``ds-<tag>-sw``), and per process a UTS namespace
(hostname ``algo-<n>``) and a private mount namespace where a generated hosts file covers
``/etc/hosts`` and the host's own tree covers ``/opt/ml`` (distributed.md section 6). Nothing of the
machine's own ``/etc`` is written. Every namespace is deleted on ``close()``, which the fixture calls
even when a test fails.

When the ``local`` helper's ``smsupervise.local.hosts`` lands, ``Cluster`` can be swapped for it: the
tests only use ``Cluster(n, root)``, ``.names``, ``.address()``, ``.base(n)``, ``.popen(n, argv)``
and ``.close()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

SUBNET = "10.77.0"
# Runs inside the host's namespaces: hostname, hosts file, /opt/ml, extra setup, then the command.
ENTER = (
    'hostname "$1" && mount --bind "$2" /etc/hosts && mount --bind "$3" /opt/ml'
    ' && eval "$4" && shift 4 && exec "$@"'
)
# With ssh=True: sshd's and ssh's configuration from the cluster's own directory (keys, no host
# checking), and a private /run for sshd's privilege-separation directory.
SSH_SETUP = (
    "mount --bind {d}/sshd_config /etc/ssh/sshd_config && mount --bind {d}/ssh_config /etc/ssh/ssh_config"
    " && mount -t tmpfs tmpfs /run && mkdir -p /run/sshd"
)


def problem() -> str | None:
    """Why namespaced hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:  # each host's tree is bind-mounted over /opt/ml: an empty directory is all it needs
        os.makedirs("/opt/ml", exist_ok=True)
    except OSError as error:
        return f"/opt/ml does not exist and cannot be made to bind-mount each host's tree over: {error}"
    probe = f"ds-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.decode(errors='replace').strip()}"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Cluster:
    """``n`` hosts algo-1..algo-n; ``resolvable`` of them are in the hosts file (default: all)."""

    def __init__(self, n: int, root: Path, resolvable: int | None = None, ssh: bool = False) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.names = [f"algo-{i}" for i in range(1, n + 1)]
        self.root = root
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        root.mkdir(parents=True, exist_ok=True)
        self.hosts_file = root / "hosts"
        listed = self.names[: n if resolvable is None else resolvable]
        lines = ["127.0.0.1 localhost", *(f"{self.address(h)} {h}" for h in listed)]
        self.hosts_file.write_text("\n".join(lines) + "\n")
        self.setup = self._ssh_setup() if ssh else "true"
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _ssh_setup(self) -> str:
        """Keys and configurations for root logins between the hosts, in the cluster's directory."""
        d = self.root / "ssh"
        d.mkdir(mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id")], check=True)
        (d / "authorized_keys").write_text((d / "id.pub").read_text())
        (d / "sshd_config").write_text(
            f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\nStrictModes no\n"
            "UsePAM no\nPasswordAuthentication no\nAcceptEnv LANG LC_*\n"
        )
        (d / "ssh_config").write_text(
            f"Host *\n  IdentityFile {d}/id\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
            "  LogLevel ERROR\n"
        )
        return SSH_SETUP.format(d=d)

    def address(self, host: str) -> str:
        return f"{SUBNET}.{int(host.rsplit('-', 1)[1])}"

    def namespace(self, host: str) -> str:
        return f"ds-{self.tag}-{host.rsplit('-', 1)[1]}"

    def base(self, host: str) -> Path:
        """The host's /opt/ml (as seen from outside)."""
        path = self.root / host / "opt_ml"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _build(self) -> None:
        switch = f"ds-{self.tag}-sw"
        _ip("netns", "add", switch)
        self.namespaces.append(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for host in self.names:
            ns = self.namespace(host)
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            inner, outer = f"{ns}-i", f"{ns}-o"
            _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", outer, "netns", switch)
            _ip("-n", ns, "link", "set", inner, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", switch, "link", "set", outer, "master", "br0")
            _ip("-n", switch, "link", "set", outer, "up")
            self.base(host)

    def command(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` as run on ``host``."""
        opt_ml = str(self.base(host))
        enter = ["unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c", ENTER, "enter"]
        where = [host, str(self.hosts_file), opt_ml, self.setup]
        return ["ip", "netns", "exec", self.namespace(host), *enter, *where, *argv]

    def popen(self, host: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` on ``host`` (in its own session, so that close() can end all of it)."""
        process = subprocess.Popen(self.command(host, argv), start_new_session=True, **kwargs)
        self.processes.append(process)
        return process

    def close(self) -> None:
        """End what was started here, then delete every namespace (veths go with them)."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        for ns in self.namespaces:
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, check=False
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.namespaces.clear()
