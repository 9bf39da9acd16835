"""The supervisors' mesh on loopback addresses (127.0.0.1-3 stand for three hosts)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import orjson
import pytest

from smsupervise.distributed.failfast import Mesh
from smsupervise.distributed.reports import Report
from smsupervise.streams.events import EventLog

HOSTS = {"algo-1": "127.0.0.1", "algo-2": "127.0.0.2", "algo-3": "127.0.0.3"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Host:
    """One host's mesh and what it heard."""

    def __init__(self, name: str, port: int, log_fd: int, job: str = "job-1") -> None:
        self.reports: list[Report] = []
        self.lost: list[str] = []
        log = EventLog(fd=log_fd, level="debug")
        self.mesh = Mesh(HOSTS, name, port, job, log, self.reports.append, self.lost.append)


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


def events(read_fd: int) -> list[dict[str, object]]:
    os.set_blocking(read_fd, False)
    try:
        return [orjson.loads(x) for x in os.read(read_fd, 1 << 20).splitlines()]
    except BlockingIOError:
        return []


@pytest.mark.asyncio
async def test_a_failure_reaches_every_other_host() -> None:
    """algo-2's failure report arrives at algo-1 and algo-3 with its rank and tail."""
    _read_fd, write_fd = os.pipe()
    port = free_port()

    async def main() -> tuple[Host, Host, Host]:
        hosts = [Host(name, port, write_fd) for name in HOSTS]
        for h in hosts:
            await h.mesh.start()
        await until(lambda: len(hosts[1].mesh.writers) == 2)
        report = Report(
            "failed", "algo-2", 1, "Training exited with code 1", time.time(), 3, 1, "ValueError: x"
        )
        hosts[1].mesh.announce(report)
        await until(lambda: hosts[0].reports and hosts[2].reports)
        assert hosts[0].lost == hosts[2].lost == []  # before anyone closes (closing is 'lost' to the others)
        for h in hosts:
            await h.mesh.close()
        return hosts[0], hosts[1], hosts[2]

    one, two, three = await main()
    assert one.reports == three.reports
    assert (one.reports[0].host, one.reports[0].rank, one.reports[0].tail) == ("algo-2", 3, "ValueError: x")
    assert two.reports == []


@pytest.mark.asyncio
async def test_a_report_made_before_a_peer_connects_still_reaches_it() -> None:
    """A host that connects late gets the report that was made before it came up."""
    _read_fd, write_fd = os.pipe()
    port = free_port()

    async def main() -> Host:
        first, late = Host("algo-1", port, write_fd), Host("algo-2", port, write_fd)
        await first.mesh.start()
        first.mesh.announce(Report("failed", "algo-1", 2, "Training exited with code 2", time.time()))
        await late.mesh.start()
        await until(lambda: late.reports)
        await first.mesh.close()
        await late.mesh.close()
        return late

    assert (await main()).reports[0].exit_code == 2


@pytest.mark.asyncio
async def test_a_supervisor_that_disappears_is_lost_but_one_that_reported_is_not() -> None:
    """A peer closing without a report is 'lost'; one that said 'done' first is not (negative twin)."""
    _read_fd, write_fd = os.pipe()
    port = free_port()

    async def main() -> tuple[list[str], list[Report]]:
        one, two, three = (Host(name, port, write_fd) for name in HOSTS)
        for h in (one, two, three):
            await h.mesh.start()
        await until(
            lambda: len(one.mesh.writers) == 2 and len(two.mesh.writers) == 2 and len(three.mesh.writers) == 2
        )
        three.mesh.announce(Report("done", "algo-3", 0, "Training finished", time.time()))
        await three.mesh.flush(1.0)
        await until(lambda: one.reports)
        await three.mesh.close()
        await two.mesh.close()  # algo-2's smsupervise disappears without a word
        await until(lambda: one.lost)
        await one.mesh.close()
        return one.lost, one.reports

    lost, reports = await main()
    assert lost == ["algo-2"]
    assert [r.kind for r in reports] == ["done"]


@pytest.mark.asyncio
async def test_a_stranger_is_refused() -> None:
    """A connection from an address that is not a job host's, or from another job, is closed unheard."""
    read_fd, write_fd = os.pipe()
    port = free_port()

    async def main() -> Host:
        one = Host("algo-1", port, write_fd)
        await one.mesh.start()
        for source, hello in (
            ("127.0.0.9", {"host": "algo-2"}),
            ("127.0.0.2", {"host": "algo-2", "job": "other"}),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            report = Report("failed", "algo-2", 1, "forged", time.time())
            writer.write(orjson.dumps({"kind": "hello", **hello}) + b"\n" + report.encode())
            said = await reader.read()  # closed by algo-1: unread, or after its challenge
            assert said == b"" or said.startswith(b'{"kind":"challenge"'), said
            writer.close()
        await one.mesh.close()
        return one

    one = await main()
    assert one.reports == []
    assert one.lost == []
    assert [e["event"] for e in events(read_fd) if e["event"] == "mesh_refused"] == ["mesh_refused"] * 2


@pytest.mark.asyncio
async def test_a_busy_port_is_only_a_warning() -> None:
    """If the port cannot be had, the host says so and nothing fails."""
    read_fd, write_fd = os.pipe()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        async def main() -> Host:
            one = Host("algo-1", port, write_fd)
            await one.mesh.start()
            await one.mesh.close()
            return one

        one = await main()
    assert (one.reports, one.lost) == ([], [])
    assert [e["event"] for e in events(read_fd)] == ["mesh_unavailable"]
