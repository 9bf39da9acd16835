"""Hosts ``algo-1 .. algo-N`` on one Linux machine, each in namespaces of its own.

A small API, also used by the distributed-training tests:

* ``isolation()`` -> ``"root"`` (PID, mount, UTS and, for N > 1, network namespaces),
  ``"userns"`` (the same inside a user namespace, sharing the machine's network) or ``"basedir"``
  (no namespaces: plain processes with ``SAGEMAKER_BASE_DIR``);
* ``with network(n) as net:`` creates, as root and for n > 1, one network namespace per host
  (``lc-<id>-<k>``, a veth named ``eth0`` with ``10.200.0.<k>/24``) plus a switch namespace
  (``lc-<id>-sw``, a bridge), and deletes them all on exit, even after an error; ``net.hosts`` are
  the ``Host`` records and ``net.hosts_file()`` the ``/etc/hosts`` text that resolves every algo-*;
* ``host_argv(host, mode, argv)`` wraps a command so it runs as PID 1 of a new PID namespace (plus
  mount and UTS namespaces and the host's network namespace): the command should be
  ``python -m smsupervise.local.enter SPEC`` (see ``enter``), which mounts and then execs the job;
* ``pid1(launcher_pid)`` is the host's PID 1 as seen from outside (the launcher's child);
* ``cleanup(prefix)`` deletes every network namespace whose name starts with ``prefix`` (tests).

Nothing here touches the machine's own network namespace, ``/etc`` or interfaces: every link
lives inside an ``lc-`` namespace (distributed.md section 6).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

Isolation = Literal["root", "userns", "basedir"]
PREFIX = "lc-"
SUBNET = "10.200.0"
UNSHARE = ("unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child")


@dataclass(frozen=True, slots=True)
class Host:
    """One host: its name (``algo-K``), index K, network namespace (None: the machine's) and address."""

    name: str
    index: int
    netns: str | None
    address: str


@dataclass(frozen=True, slots=True)
class Network:
    """The hosts of one job and the namespaces made for them."""

    hosts: tuple[Host, ...]
    namespaces: tuple[str, ...]

    def hosts_file(self) -> str:
        """An ``/etc/hosts`` that resolves localhost and every ``algo-*`` of the job."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{host.address}\t{host.name}" for host in self.hosts]
        return "\n".join(lines) + "\n"


def _works(argv: Sequence[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def isolation() -> Isolation:
    """The strongest isolation this machine allows (root, user namespaces, or none)."""
    if shutil.which("unshare") is None:
        return "basedir"
    if os.geteuid() == 0 and _works([*UNSHARE, "true"]):
        return "root"
    if _works(["unshare", "--user", "--map-root-user", *UNSHARE[1:], "true"]):
        return "userns"
    return "basedir"


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)} failed: {result.stderr.strip()} (is iproute2 installed?)")


def _create(count: int, prefix: str) -> Network:
    job = f"{prefix}{secrets.token_hex(3)}"
    switch = f"{job}-sw"
    made: list[str] = []
    try:
        _ip("netns", "add", switch)
        made.append(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        hosts = []
        for k in range(1, count + 1):
            ns = f"{job}-{k}"
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{k}", "netns", switch)
            _ip("-n", switch, "link", "set", f"v{k}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{k}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            hosts.append(Host(f"algo-{k}", k, ns, f"{SUBNET}.{k}"))
    except BaseException:
        _delete(made)
        raise
    return Network(tuple(hosts), tuple(made))


def _delete(namespaces: Sequence[str]) -> None:
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@contextlib.contextmanager
def network(count: int, mode: Isolation = "root", prefix: str = PREFIX) -> Iterator[Network]:
    """The job's hosts; as root and for count > 1 each in a network namespace of its own.

    Otherwise every host shares the machine's network and resolves every ``algo-*`` to 127.0.0.1.
    """
    if mode == "root" and count > 1:
        net = _create(count, prefix)
    else:
        net = Network(tuple(Host(f"algo-{k}", k, None, "127.0.0.1") for k in range(1, count + 1)), ())
    try:
        yield net
    finally:
        _delete(net.namespaces)


def cleanup(prefix: str = PREFIX) -> list[str]:
    """Delete every network namespace whose name starts with ``prefix``; returns their names."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    names = [line.split()[0] for line in listed.splitlines() if line.startswith(prefix)]
    _delete(names)
    return names


def host_argv(host: Host, mode: Isolation, argv: Sequence[str]) -> list[str]:
    """``argv`` as PID 1 of new PID, mount and UTS namespaces (and in the host's network namespace)."""
    if mode == "basedir":
        return list(argv)
    wrapped = list(UNSHARE) + list(argv)
    if mode == "userns":
        return ["unshare", "--user", "--map-root-user", *wrapped[1:]]
    if host.netns is not None:
        return ["nsenter", f"--net=/run/netns/{host.netns}", *wrapped]
    return wrapped


def pid1(launcher_pid: int) -> int | None:
    """The PID 1 of a host's PID namespace, seen from outside: the launcher's (unshare's) child."""
    try:
        with open(f"/proc/{launcher_pid}/task/{launcher_pid}/children") as handle:
            children = handle.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None
