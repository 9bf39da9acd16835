"""The mesh against hostile input, on loopback addresses (127.0.0.1-3 stand for three hosts,
127.0.0.9 for a machine that is no host of the job): reports of the wrong types are refused by a
typed check and never acted on; only a sender with the job's key is heard; refusals cannot flood
the job's log; and however many connections arrive, the mesh holds a bounded number of them."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsupervise.distributed import failfast, meshkey, reports
from smsupervise.distributed.cluster import ClusterOptions, ClusterPlan
from smsupervise.distributed.coordinator import Coordinator, Ending
from smsupervise.distributed.failfast import Mesh
from smsupervise.distributed.reports import Report
from smsupervise.distributed.topology import Topology
from smsupervise.streams.events import EventLog

HOSTS = {"algo-1": "127.0.0.1", "algo-2": "127.0.0.2", "algo-3": "127.0.0.3"}
KEY = meshkey.derive({"SM_HPS": '{"lr": 0.1}'}, "job-1", list(HOSTS))
VALID = {
    "kind": "failed",
    "host": "algo-2",
    "exit_code": 1,
    "headline": "Training exited with code 1",
    "at": 1700000000.5,
    "rank": 3,
    "local_rank": 1,
    "tail": "ValueError: x",
}
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fits(name: str, value: Any) -> bool:
    """The field rules, said independently of the code under test."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if name in ("host", "kind"):
        return (
            isinstance(value, str) and (name == "host" or value in ("failed", "done")) and len(value) <= 255
        )
    if name == "exit_code":
        return is_int and 0 <= value <= 255
    if name in ("headline", "tail"):
        return isinstance(value, str) and len(value) <= 2048
    if name == "at":
        return (is_int or isinstance(value, float)) and math.isfinite(value)
    return value is None or (is_int and 0 <= value < 2**31)  # rank, local_rank


@settings(max_examples=600)
@given(name=st.sampled_from(sorted(VALID)), value=JUNK)
def test_a_report_with_any_field_of_a_wrong_type_is_refused(name: str, value: Any) -> None:
    """One field replaced by anything (``"headline": 5``, ``"exit_code": "one"``, NaN, nested junk):
    decoded only when it fits the field's rule; otherwise refused, with the field named."""
    line = json.dumps({**VALID, name: value}).encode()  # a stranger's encoder: NaN, huge ints too
    report = Report.decode(line)
    try:
        seen = orjson.loads(line)[name]  # what the field holds on the wire
    except orjson.JSONDecodeError:
        assert report is None
        return
    if _fits(name, seen):
        assert report is not None
        assert getattr(report, name) == seen
    else:
        assert report is None, (name, value)
        assert name in str(reports.check(line))


@pytest.mark.parametrize(
    "line",
    [
        b"5",
        b"[]",
        b'"failed"',
        b"null",
        b'{"kind":"failed"}',
        b'{"kind":"failed","host":"algo-2","exit_code":1,"headline":"x","at":1,"extra":{"a":[1]}}',
        b'{"kind":"failed","host":"algo-2","exit_code":true,"headline":"x","at":1}',
        b'{"kind":"failed","host":"algo-2","exit_code":1,"headline":"x","at":1e400}',
        b'{"kind":"failed","host":"algo-2","exit_code":1,"headline":"x","at":1,"rank":-1}',
        b'{"kind":"failed","host":"algo-2","exit_code":1,"headline":"x","at":1,"rank":1e3}',
        b'{"kind":"failed","host":"algo-2","exit_code":1,"headline":"x","at":1,"tail":["a"]}',
        b'{"kind":"failed","host":{"algo-2":1},"exit_code":1,"headline":"x","at":1}',
        b"\xff\xfe",
    ],
)
def test_malformed_lines_of_every_shape_are_refused(line: bytes) -> None:
    """Not an object, a missing field, an unknown one, a bool for an int, infinity, junk bytes."""
    assert Report.decode(line) is None
    assert isinstance(reports.check(line), str)


@settings(max_examples=200)
@given(
    kind=st.sampled_from(["failed", "done"]),
    code=st.integers(0, 255),
    headline=st.text(max_size=200),
    at=st.floats(0, 4e9),
    rank=st.none() | st.integers(0, 4096),
    tail=st.text(max_size=600),
)
def test_every_well_formed_report_survives_the_trip(  # noqa: PLR0917 - hypothesis's arguments
    kind: str, code: int, headline: str, at: float, rank: int | None, tail: str
) -> None:
    """The negative twin: what a supervisor sends decodes to the same report."""
    report = Report(kind, "algo-2", code, headline, at, rank, rank, tail)  # type: ignore[arg-type]
    assert Report.decode(report.encode()) == report


class Host:
    """One host's mesh, what it heard, and its log (a file: nothing blocks on a full pipe)."""

    def __init__(self, name: str, port: int, key: bytes = KEY, hosts: dict[str, str] = HOSTS) -> None:
        self.reports: list[Report] = []
        self.lost: list[str] = []
        self.log_file = tempfile.TemporaryFile()  # noqa: SIM115 - read back after the run
        log = EventLog(fd=self.log_file.fileno(), level="debug")
        self.mesh = Mesh(hosts, name, port, "job-1", log, self.reports.append, self.lost.append, key=key)

    def events(self) -> list[dict[str, Any]]:
        self.log_file.seek(0)
        return [orjson.loads(x) for x in self.log_file.read().splitlines()]

    def log_bytes(self) -> int:
        return os.fstat(self.log_file.fileno()).st_size


async def until(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


async def _speak(
    port: int, source: str, key: bytes, lines: list[bytes]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A sender at ``source``: answer the challenge with a hello MAC'd with ``key``, then sign
    each of ``lines`` with it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    challenge = orjson.loads(await reader.readline())
    nonce = bytes.fromhex(challenge["nonce"])
    mac = meshkey.hello_mac(key, nonce, "algo-2", "job-1")
    writer.write(orjson.dumps({"kind": "hello", "host": "algo-2", "job": "job-1", "mac": mac}) + b"\n")
    for seq, body in enumerate(lines):
        writer.write(meshkey.sign(key, nonce, seq, body))
    await writer.drain()
    return reader, writer


def test_signed_reports_of_wrong_types_are_never_acted_on() -> None:
    """A sender with the key sends reports with wrong types: each is refused (an event naming the
    field); the valid one after them is acted on (the twin, on the same connection)."""
    port = free_port()
    junk = [
        {**VALID, "headline": 5},
        {**VALID, "exit_code": "one"},
        {**VALID, "at": {"nested": [1, {"x": None}]}},
        {**VALID, "rank": [3]},
        {**VALID, "host": "algo-3"},  # a report for another host than the one that proved itself
    ]

    async def main() -> Host:
        one = Host("algo-1", port)
        await one.mesh.start()
        lines = [orjson.dumps(j) for j in junk] + [b'{"kind":"beat"}', orjson.dumps(VALID)]
        _, writer = await _speak(port, "127.0.0.2", KEY, lines)
        await until(lambda: one.reports)
        writer.close()
        await one.mesh.close()
        return one

    one = asyncio.run(main())
    assert one.reports == [Report(**VALID)]  # type: ignore[arg-type]
    refused = [e for e in one.events() if e["event"] == "mesh_report_refused"]
    assert len(refused) == len(junk)
    for event, field in zip(refused, ["headline", "exit_code", "at", "rank"], strict=False):
        assert field in event["why"]


@pytest.mark.parametrize("who", ["no key", "another job's key", "a replayed line"])
def test_a_sender_without_the_key_is_not_heard(who: str) -> None:
    """From a job host's own address, with the job's name: without the key (or with another
    job's, or replaying a signed line from another connection) its 'failed' is never acted on."""
    port = free_port()

    async def main() -> Host:
        one = Host("algo-1", port)
        await one.mesh.start()
        report = orjson.dumps(VALID)
        if who == "a replayed line":
            _, first = await _speak(port, "127.0.0.2", KEY, [])  # a real connection's nonce...
            await until(lambda: "algo-2" in one.mesh.heard)
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
            await reader.readline()
            old_nonce = b"\0" * meshkey.NONCE_BYTES  # ...and a line signed for another connection
            mac = meshkey.hello_mac(KEY, old_nonce, "algo-2", "job-1")
            writer.write(
                orjson.dumps({"kind": "hello", "host": "algo-2", "job": "job-1", "mac": mac}) + b"\n"
            )
            writer.write(meshkey.sign(KEY, old_nonce, 0, report))
            first.close()
        else:
            key = b"" if who == "no key" else meshkey.derive({}, "job-2", list(HOSTS))
            reader, writer = await _speak(port, "127.0.0.2", key, [report])
        assert await reader.read() == b""  # after the challenge (read): closed by algo-1, unheard
        writer.close()
        await one.mesh.close()
        return one

    one = asyncio.run(main())
    assert one.reports == []
    assert any(e["event"] == "mesh_refused" for e in one.events())


def test_a_sender_with_the_key_is_heard() -> None:
    """The negative twin: the same 'failed', signed with the job's key, is acted on."""
    port = free_port()

    async def main() -> Host:
        one = Host("algo-1", port)
        await one.mesh.start()
        _, writer = await _speak(port, "127.0.0.2", KEY, [orjson.dumps(VALID)])
        await until(lambda: one.reports)
        writer.close()
        await one.mesh.close()
        return one

    assert [r.host for r in asyncio.run(main()).reports] == ["algo-2"]


def test_a_flood_of_refusals_is_summed_up_not_logged_whole() -> None:
    """500 connections of 60 KB hellos, from a stranger's address and from a host's: a handful of
    mesh_refused events, quoting at most a few dozen characters, and the rest counted exactly."""
    port = free_port()
    hello = orjson.dumps({"kind": "hello", "host": "x" * 60_000, "job": "job-1"}) + b"\n"
    sent = 500

    async def flood(one: Host) -> None:
        for i in range(sent):
            source = "127.0.0.9" if i % 2 else "127.0.0.2"
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            with_hello = hello if i % 2 == 0 else hello[:100]
            try:
                writer.write(with_hello)
                await writer.drain()
                await reader.read()
            except OSError:
                pass  # closed by algo-1 while we wrote: refused
            writer.close()
        del one

    async def main() -> Host:
        one = Host("algo-1", port)
        await one.mesh.start()
        await flood(one)
        await one.mesh.close()  # the summary of the interval so far
        return one

    one = asyncio.run(main())
    events = one.events()
    shown = [e for e in events if e["event"] == "mesh_refused"]
    summed = [e for e in events if e["event"] == "mesh_refused_summary"]
    assert len(shown) <= reports.REFUSALS_SHOWN
    assert all(len(e["why"]) < 200 for e in shown)
    assert len(shown) + sum(e["refused"] for e in summed) == sent
    assert one.log_bytes() < 16_384
    assert one.reports == []


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_held_connections_are_bounded_per_address_and_in_all() -> None:
    """300 silent connections from each of two job hosts' addresses and 300 from a stranger's: the
    mesh's side holds at most PENDING_PER_ADDRESS per address; with 40 host addresses, at most
    PENDING_TOTAL. Counted in the kernel's fd table, not in the mesh's bookkeeping."""
    port = free_port()
    many = {f"algo-{i}": f"127.0.0.{i}" for i in range(1, 42)}

    async def hold(sources: list[str], each: int) -> list[asyncio.StreamWriter]:
        writers = []
        for source in sources:
            for _ in range(each):
                _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
                writers.append(writer)
        return writers

    async def held_by_mesh(hosts: dict[str, str], sources: list[str], each: int) -> int:
        one = Host("algo-1", port, hosts=hosts)
        await one.mesh.start()
        await asyncio.sleep(0)
        before = _fds()
        writers = await hold(sources, each)
        await until(lambda: _accept_queue(port) == 0)  # all accepted (kept, or closed at once)
        bound = 2 * failfast.PENDING_PER_ADDRESS if hosts is HOSTS else failfast.PENDING_TOTAL
        await until(lambda: _fds() - before - len(writers) <= bound)  # crowded-out ones close
        server_side = _fds() - before - len(writers)
        for writer in writers:
            writer.close()
        await one.mesh.close()
        return server_side

    three_sources = asyncio.run(held_by_mesh(HOSTS, ["127.0.0.2", "127.0.0.3", "127.0.0.9"], 300))
    assert three_sources <= 2 * failfast.PENDING_PER_ADDRESS
    forty = asyncio.run(held_by_mesh(many, [f"127.0.0.{i}" for i in range(2, 42)], 3))
    assert forty <= failfast.PENDING_TOTAL


def _accept_queue(port: int) -> int:
    """Connections waiting in the kernel's accept queue of the listener on ``port`` (for a LISTEN
    socket, /proc/net/tcp's rx_queue is that queue's length)."""
    for line in open("/proc/net/tcp").read().splitlines()[1:]:  # noqa: SIM115
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            return int(queues.split(":")[1], 16)
    raise AssertionError(f"no listener on port {port}")


def test_a_peer_still_joins_and_reports_while_its_address_is_flooded() -> None:
    """The negative twin: 200 silent connections from algo-2's address; algo-2's own supervisor
    still joins (proving itself crowds out nobody it needs) and its report is acted on."""
    port = free_port()

    async def main() -> Host:
        one = Host("algo-1", port)
        two = Host("algo-2", port)
        await one.mesh.start()
        writers = []
        for _ in range(200):
            _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
            writers.append(writer)
        await two.mesh.start()
        await until(lambda: "algo-1" in two.mesh.writers)
        two.mesh.announce(Report("failed", "algo-2", 3, "Training exited with code 3", time.time()))
        await until(lambda: one.reports)
        for writer in writers:
            writer.close()
        await two.mesh.close()
        await one.mesh.close()
        return one

    one = asyncio.run(main())
    assert [(r.host, r.exit_code) for r in one.reports] == [("algo-2", 3)]


def test_a_keyed_peer_sending_junk_cannot_flood_the_log_either() -> None:
    """200 signed reports of wrong types (each with a 10 KB headline that is no string): a handful
    of mesh_report_refused events, each short, and the rest counted in one summary."""
    port = free_port()
    sent = 200

    async def main() -> Host:
        one = Host("algo-1", port)
        await one.mesh.start()
        junk = orjson.dumps({**VALID, "headline": ["x" * 10_000]})
        _, writer = await _speak(port, "127.0.0.2", KEY, [junk] * sent + [orjson.dumps(VALID)])
        await until(lambda: one.reports)
        writer.close()
        await one.mesh.close()
        return one

    one = asyncio.run(main())
    events = one.events()
    shown = [e for e in events if e["event"] == "mesh_report_refused"]
    summed = [e for e in events if e["event"] == "mesh_report_refused_summary"]
    assert len(shown) == reports.REFUSALS_SHOWN
    assert all(len(e["why"]) < 300 for e in shown)
    assert len(shown) + sum(e["refused"] for e in summed) == sent
    assert one.log_bytes() < 16_384


SHORT_OF_FDS = r"""
import asyncio, os, resource, sys
import uvloop
from smsupervise.distributed import meshkey
from smsupervise.distributed.failfast import Mesh
from smsupervise.streams.events import EventLog

HOSTS = {"algo-1": "127.0.0.1", "algo-2": "127.0.0.2", "algo-3": "127.0.0.3"}

async def main():
    reports = []
    key = meshkey.derive({"SM_HPS": '{"lr": 0.1}'}, "job-1", list(HOSTS))
    mesh = Mesh(HOSTS, "algo-1", int(sys.argv[1]), "job-1", EventLog(fd=2, level="debug"),
                reports.append, print, key=key)
    await mesh.start()
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, 1024))
    filler = []
    try:
        while True:
            filler.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    print("full", flush=True)
    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    loop.add_reader(0, go.set)
    await go.wait()
    loop.remove_reader(0)
    for fd in filler:
        os.close(fd)
    print("freed", flush=True)
    while not reports:
        await asyncio.sleep(0.01)
    print("heard", reports[0].host, flush=True)
    await mesh.close()

uvloop.run(main())
"""


def test_no_descriptor_left_pauses_accepting_and_it_resumes() -> None:
    """In a process out of descriptors (RLIMIT_NOFILE reached), connections to the mesh: accept()
    fails, the mesh says so once and pauses (the backlog waits in the kernel); once descriptors are
    free again, a peer joins and its report is heard."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SHORT_OF_FDS, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        assert process.stdout.readline() == b"full\n"
        waiting = [
            socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0)) for _ in range(3)
        ]
        for line in process.stderr:
            if orjson.loads(line)["event"] == "mesh_accept_paused":
                break
        process.stdin.write(b"go\n")
        process.stdin.flush()
        assert process.stdout.readline() == b"freed\n"

        async def peer() -> None:
            two = Host("algo-2", port)
            await two.mesh.start()
            await until(lambda: "algo-1" in two.mesh.writers)
            two.mesh.announce(Report("failed", "algo-2", 3, "Training exited with code 3", time.time()))
            await two.mesh.flush(5.0)
            heard = await asyncio.get_running_loop().run_in_executor(None, process.stdout.readline)
            assert heard == b"heard algo-2\n"
            await two.mesh.close()

        asyncio.run(peer())
        assert process.wait(30) == 0
        for sock in waiting:
            sock.close()
        paused = [orjson.loads(x)["event"] for x in process.stderr.read().splitlines()]
        assert "mesh_accept_paused" not in paused  # one event for the episode (read above)
    finally:
        process.kill()
        process.wait()


def test_a_long_headline_of_ours_is_cut_so_that_the_peers_take_it() -> None:
    """The sender's side of the typed check: a host whose headline is longer than the peers accept
    (many Pipe relay failures appended) sends it cut, and the peers decode it."""
    hosts = ("algo-1", "algo-2")
    topology = Topology(hosts, hosts, "algo-2", "algo-1", "eth0", "ml.m5.xlarge", 0, 0, {})
    plan = ClusterPlan(topology, None, ClusterOptions(), None)
    coordinator = Coordinator(plan, EventLog(fd=os.open(os.devnull, os.O_WRONLY)), "job-1")
    ending = Ending(False, 1, "Training exited with code 1" + "; a relay failed" * 500, False, b"", 1.0)
    report = coordinator._report(ending, "algo-2", failed_here=True)
    assert Report.decode(report.encode()) == report
    assert report.headline.startswith("Training exited with code 1; a relay failed")
