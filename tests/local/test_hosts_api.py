"""The hosts API the distributed tests reuse: namespaces that talk to each other and always go away."""

from __future__ import annotations

import subprocess
import sys

import pytest

from smsupervise.local import hosts
from tests.local.conftest import needs_root, netns_prefix


def _listed() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(netns_prefix())]


@needs_root
def test_two_hosts_reach_each_other_by_tcp_over_eth0() -> None:
    """algo-2 connects to a TCP server on algo-1 (10.200.0.1) from its own network namespace."""
    server_code = (
        "import socket; s=socket.create_server(('10.200.0.1',7777)); print('up',flush=True);"
        " c,_=s.accept(); c.sendall(b'hello from algo-1'); c.close()"
    )
    client_code = (
        "import socket; print(socket.create_connection(('10.200.0.1',7777),timeout=10).recv(64).decode())"
    )
    with hosts.network(2, "root", netns_prefix()) as net:
        one, two = net.hosts
        assert (one.address, two.address) == ("10.200.0.1", "10.200.0.2")
        assert "10.200.0.2\talgo-2" in net.hosts_file()
        argv = hosts.host_argv(one, "root", [sys.executable, "-c", server_code])
        with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as server:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "up"
            client = subprocess.run(
                hosts.host_argv(two, "root", [sys.executable, "-c", client_code]),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert client.stdout.strip() == "hello from algo-1", client.stderr
            assert server.wait(timeout=30) == 0
        assert len(_listed()) == 3  # two hosts and the switch
    assert _listed() == []


@needs_root
def test_the_namespaces_are_deleted_when_the_block_fails() -> None:
    """An exception inside ``network()`` still deletes every namespace it made."""
    seen: list[int] = []

    def fail_inside() -> None:
        with hosts.network(3, "root", netns_prefix()):
            seen.append(len(_listed()))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert seen == [4]  # three hosts and the switch existed
    assert _listed() == []


@needs_root
def test_pid1_is_the_launchers_child_and_is_pid_1_inside() -> None:
    """host_argv makes the command PID 1 of a new PID namespace; pid1() finds it from outside."""
    host = hosts.Host("algo-1", 1, None, "127.0.0.1")
    code = "import os,sys; print(os.getpid(), flush=True); sys.stdin.read()"
    argv = hosts.host_argv(host, "root", [sys.executable, "-c", code])
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as launcher:
        assert launcher.stdout is not None
        assert launcher.stdout.readline().strip() == "1"
        inner = hosts.pid1(launcher.pid)
        assert inner is not None
        assert inner != launcher.pid
        with open(f"/proc/{inner}/status") as status:
            assert "NSpid:" in (text := status.read())
        assert text.split("NSpid:")[1].splitlines()[0].split()[-1] == "1"
        launcher.kill()
