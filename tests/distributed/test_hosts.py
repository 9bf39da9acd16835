"""The namespaced hosts themselves: names, addresses, /opt/ml, and cleanup."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from tests.distributed.conftest import needs_hosts
from tests.distributed.hosts import Cluster


@needs_hosts
def test_each_host_has_its_name_address_and_tree(cluster: Callable[..., Cluster]) -> None:
    """algo-2 sees its own hostname, resolves algo-1 to its address, and has its own /opt/ml and eth0."""
    c = cluster(2)
    (c.base("algo-2") / "marker").write_text("two")
    script = (
        "import socket, os; print(socket.gethostname(), socket.gethostbyname('algo-1'), "
        "open('/opt/ml/marker').read(), os.listdir('/sys/class/net'))"
    )
    out = subprocess.run(c.command("algo-2", ["python3", "-c", script]), capture_output=True, check=True)
    name, address, marker, nics = out.stdout.decode().split(" ", 3)
    assert (name, address, marker) == ("algo-2", "10.77.0.1", "two")
    assert "eth0" in nics


@needs_hosts
def test_namespaces_are_gone_after_close(cluster: Callable[..., Cluster]) -> None:
    """close() deletes every ds- namespace it made."""
    c = cluster(3)
    names = list(c.namespaces)
    c.close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, check=True).stdout.decode()
    assert not any(ns in listed for ns in names)
