"""Waiting for the other hosts' names: backoff, one event per late host, an error naming the host."""

from __future__ import annotations

import os

import orjson
import pytest

from smsupervise.distributed import peers
from smsupervise.streams.events import EventLog


def _events(read_fd: int) -> list[dict[str, object]]:
    os.set_blocking(read_fd, False)
    try:
        data = os.read(read_fd, 1 << 20)
    except BlockingIOError:
        data = b""
    return [orjson.loads(line) for line in data.splitlines()]


@pytest.mark.asyncio
async def test_a_late_host_gets_one_event_and_resolves() -> None:
    """A host that resolves on the third try: one peer_waiting, one peer_resolved, its address."""
    read_fd, write_fd = os.pipe()
    tries = {"algo-2": 0}

    async def resolve(host: str) -> str:
        if host == "algo-2":
            tries[host] += 1
            if tries[host] < 3:
                raise OSError(f"[Errno -2] Name or service not known: {host}")
        return "10.0.0.2"

    backoff = peers.Backoff(limit=5.0, first=0.01, longest=0.02)
    found = await peers.wait_for_hosts(["algo-1", "algo-2"], EventLog(fd=write_fd), backoff, resolve)
    assert found == {"algo-1": "10.0.0.2", "algo-2": "10.0.0.2"}
    names = [(e["event"], e["host"]) for e in _events(read_fd)]
    assert names == [("peer_waiting", "algo-2"), ("peer_resolved", "algo-2")]


@pytest.mark.asyncio
async def test_a_host_that_never_resolves_is_named() -> None:
    """After the limit, the error names the host and the run fails with exit 1."""
    read_fd, write_fd = os.pipe()

    async def resolve(host: str) -> str:
        raise OSError("Name or service not known")

    backoff = peers.Backoff(limit=0.2, first=0.01, longest=0.05)
    with pytest.raises(
        peers.PeerUnresolved, match=r"'algo-9' of resourceconfig\.json never resolved"
    ) as caught:
        (await peers.wait_for_hosts(["algo-9"], EventLog(fd=write_fd), backoff, resolve))
    assert caught.value.exit_code == 1
    assert [e["event"] for e in _events(read_fd)] == ["peer_waiting", "peer_unresolved"]


@pytest.mark.asyncio
async def test_the_real_resolver_finds_localhost() -> None:
    """resolve_ipv4 goes through the system resolver (negative twin: an invalid name fails)."""
    assert (await peers.resolve_ipv4("localhost")).startswith("127.")
    with pytest.raises(OSError):  # noqa: PT011 - gaierror's text depends on the resolver
        (await peers.resolve_ipv4("no-such-host.invalid"))


def test_the_toolkit_backoff() -> None:
    """100 ms doubling, capped at 30 s, for 15 minutes."""
    b = peers.TOOLKIT_BACKOFF
    assert (b.delay(0), b.delay(3), b.delay(20), b.limit) == (0.1, 0.8, 30.0, 900.0)
