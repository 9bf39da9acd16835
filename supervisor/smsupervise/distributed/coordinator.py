"""One host's part in a distributed job, on the event loop: wait for the peers, run the fail-fast
mesh, and at the end tell the others how this host's job ended and work out the root cause.

The supervisor calls ``before_main`` before it starts the launcher, and ``finish`` once the job has
ended; the mesh calls back into ``request_stop`` when another host failed or vanished.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from smsupervise.core.status import ExitStatus, signal_name
from smsupervise.distributed import attribution, peers
from smsupervise.distributed.cluster import ClusterPlan
from smsupervise.distributed.failfast import Mesh
from smsupervise.distributed.ranklogs import RankLogs
from smsupervise.distributed.rankwatch import RankExit, RankWatch
from smsupervise.distributed.reports import HEADLINE_LIMIT, Report
from smsupervise.linux import proctree
from smsupervise.settings import Settings
from smsupervise.streams.events import EventLog
from smsupervise.streams.framing import RankTags, RecordFormat, SeqCounter
from smsupervise.streams.writer import Output

SSH_PORT = 22
FLUSH_TIMEOUT = 1.0  # how long the last report may take to leave
SETTLE = 0.5  # after a local failure, how long to listen for an earlier one elsewhere
TAIL_CHARS = 600


class Ending(NamedTuple):
    """How this host's job ended, as the supervisor saw it."""

    ok: bool
    exit_code: int
    headline: str
    stopped: bool  # a stop ended it (SIGTERM, max runtime, or the cluster)
    stderr_tail: bytes
    ended_at: float  # wall clock, when the launcher exited


class Verdict(NamedTuple):
    """What goes first in this host's failure file, and the outcome an MPI worker takes over."""

    root_cause: str | None
    adopted: Report | None  # MPI worker: the master's outcome
    tail: bytes | None = None  # this host's failing rank's stderr, when the ranks log to files


class Coordinator:
    """Peer wait, mesh and root cause for one host. ``before_main``, then ``finish`` once."""

    def __init__(self, plan: ClusterPlan, log: EventLog, job: str) -> None:
        self.plan = plan
        self.log = log
        self.job = job
        self.mesh: Mesh | None = None
        self.reports: list[Report] = []
        self.request_stop: Callable[[str], None] = lambda reason: None
        self.stopped_for: Report | None = None
        self.lost: str | None = None
        self.silent: str | None = None
        self.rank_logs: RankLogs | None = None
        self.launcher_pid: int | None = None
        self.announced: Report | None = None  # our failure, told as soon as a rank or the launcher failed
        self.rank_watch: RankWatch | None = None
        self.early: asyncio.Task[None] | None = None  # telling a rank's failure (its tail read first)

    @property
    def runner(self) -> str:
        return self.plan.launch.runner if self.plan.launch is not None else "process"

    async def before_main(self, request_stop: Callable[[str], None]) -> None:
        """Wait for every host's name (raises ``PeerUnresolved``), then join the mesh."""
        self.request_stop = request_stop
        topology = self.plan.topology
        if not self.plan.multi_host:
            return
        backoff = peers.Backoff(limit=self.plan.options.peer_wait)
        if self.plan.options.wait_for_peers:
            addresses: dict[str, str] | None = await peers.wait_for_hosts(topology.hosts, self.log, backoff)
        else:
            addresses = await self._resolve_once()
        if self.plan.options.fail_fast and addresses is not None:
            self.mesh = Mesh(addresses, topology.current_host, self.plan.options.port, self.job, self.log,
                             self._on_report, self._on_lost, self.plan.options.peer_timeout,
                             self._on_silent, self.plan.mesh_key)  # fmt: skip
            await self.mesh.start()
            self.log.info("mesh_started", port=self.plan.options.port, peers=list(topology.peers))
        if self.runner == "mpi-master":
            workers = [h for h in topology.distribution_hosts if h != topology.current_host]
            await peers.wait_for_ports(workers, SSH_PORT, self.log, backoff)

    def launcher_started(
        self, pid: int, outputs: dict[int, Output], counter: SeqCounter, settings: Settings
    ) -> None:
        """Start reading the ranks' own log files (torchrun with PET_LOG_DIR)."""
        self.launcher_pid = pid
        plan, launch = self.plan, self.plan.launch
        if launch is not None and plan.watch_ranks and self.mesh is not None:
            self.rank_watch = RankWatch(pid, launch.node_rank, launch.processes_per_host, self._rank_failed)
            self.rank_watch.start()
        if plan.rank_log_dir is None or launch is None:
            return
        host = plan.topology.current_host
        fmt = RecordFormat(pid=pid, host=host, job=self.job or None, max_line_bytes=settings.max_line_bytes)
        self.rank_logs = RankLogs(plan.rank_log_dir, launch.node_rank, launch.processes_per_host, fmt,
                                  outputs, counter, plan.options.ranks)  # fmt: skip
        self.rank_logs.start()

    def record_tags(self) -> RankTags | None:
        """On the MPI master, mpirun's ``--tag-output`` prefixes give each line its rank and host."""
        launch = self.plan.launch
        if launch is None or launch.runner != "mpi-master":
            return None
        hosts = self.plan.topology.distribution_hosts
        return RankTags(launch.processes_per_host, hosts, self.plan.options.ranks)

    def stop_begun(self) -> None:
        """A stop began: from now on the ranks' exits are its doing, not failures to tell."""
        if self.rank_watch is not None:
            self.rank_watch.stop_begun()

    def _rank_failed(self, ended: RankExit) -> None:
        """A rank failed before torchrun noticed: tell the other hosts now (its stderr tail first)."""
        if self.announced is None and self.early is None and self.mesh is not None:
            self.log.warning("rank_failed", rank=ended.rank, local_rank=ended.local_rank,
                             status=ended.status.describe(), action="telling the other hosts")  # fmt: skip
            self.early = asyncio.ensure_future(self._announce_rank(ended))

    async def _announce_rank(self, ended: RankExit) -> None:
        tail = b""
        if self.rank_logs is not None:
            tail = await self.rank_logs.final_tail(ended.rank)
        text = tail.decode("utf-8", "replace").strip()[-TAIL_CHARS:]
        code = ended.status.shell_code()
        me = self.plan.topology.current_host
        words = headline(ended.status)
        report = Report("failed", me, code, words, ended.at, ended.rank, ended.local_rank, text)
        if self.announced is None and self.mesh is not None:
            self.announced = report
            self.mesh.announce(report)

    def ranks(self) -> list[int] | None:
        """torchrun's ranks (its children, each in a session of its own); None for other launchers."""
        if self.launcher_pid is None or self.plan.launch is None or self.plan.launch.agent != "torchrun":
            return None
        return proctree.children(self.launcher_pid)

    async def launcher_exited(
        self, status: ExitStatus, drained_tail: Callable[[], Awaitable[bytes]], stopping: bool
    ) -> None:
        """The ranks' files to their end; a failure of our own goes to the other hosts right away
        (the launcher's output drained first, so its summary is in the tail)."""
        stderr_tail = await drained_tail()
        if self.rank_watch is not None:
            self.rank_watch.close()
        if self.early is not None:
            await self.early
        if self.rank_logs is not None:
            await self.rank_logs.stop()
        if status.ok or stopping or self.mesh is None:
            return
        if self.announced is None:
            ending = Ending(False, status.shell_code(), headline(status), False, stderr_tail, time.time())
            self.announced = self._report(ending, self.plan.topology.current_host, failed_here=True)
            self.mesh.announce(self.announced)
        await self.mesh.flush(FLUSH_TIMEOUT)

    async def _resolve_once(self) -> dict[str, str] | None:
        """SM_STUDIO_LOCAL_MODE=true: no waiting (the toolkit's bypass); the mesh only if all resolve now."""
        self.log.info("peer_wait_skipped", reason="SM_STUDIO_LOCAL_MODE=true, as the toolkit")
        try:
            return {host: await peers.resolve_ipv4(host) for host in self.plan.topology.hosts}
        except OSError as error:
            self.log.warning("mesh_unavailable", port=self.plan.options.port, error=str(error),
                             impact="other hosts will not learn quickly that this host's job failed",
                             fix="make every host's name resolve")  # fmt: skip
            return None

    def _on_report(self, report: Report) -> None:
        self.reports.append(report)
        if report.kind == "failed":
            self.log.warning("peer_failed", host=report.host, rank=report.rank, headline=report.headline)
            if self.stopped_for is None:
                self.stopped_for = report
            self.request_stop(f"fail-fast: {report.host} failed")
        elif self.runner == "mpi-worker" and report.host == self.plan.topology.master:
            self.log.info("mpi_master_finished", host=report.host, exit_code=report.exit_code)
            self.stopped_for = report
            self.request_stop(f"the MPI master {report.host} finished")

    def _on_lost(self, host: str) -> None:
        self.log.warning("peer_lost", host=host, impact="its job is gone: stopping this host's job too")
        self.lost = self.lost or host
        self.request_stop(f"fail-fast: {host}'s smsupervise disappeared")

    def _on_silent(self, host: str) -> None:
        timeout = self.plan.options.peer_timeout
        impact = "presumed gone (partitioned or stopped): stopping this host's job too"
        self.log.warning("peer_silent", host=host, timeout_s=timeout, impact=impact)
        self.silent = self.silent or host
        self.request_stop(f"fail-fast: {host} went silent")

    async def finish(self, ending: Ending) -> Verdict:
        """Announce this host's outcome; returns what the failure file should lead with."""
        me = self.plan.topology.current_host
        failed_here = not ending.ok and not ending.stopped
        report = self.announced or self._report(ending, me, failed_here)
        if failed_here and self.mesh is not None and not self.reports:
            # an earlier failure elsewhere may be on its way (counted from when ours was told)
            await asyncio.sleep(max(0.0, SETTLE - (time.time() - report.at)))
        if self.mesh is not None:
            if self.announced is None:
                self.mesh.announce(report)
                await self.mesh.flush(FLUSH_TIMEOUT)
            await self.mesh.close()
        earlier = [r for r in self.reports if r.kind == "failed" and (not failed_here or r.at < report.at)]
        first = min(earlier, key=lambda r: r.at) if earlier else (report if failed_here else None)
        adopted = self.stopped_for if self.runner == "mpi-worker" else None
        tail = self._local_tail(report)
        await self._remove_rank_logs()
        if first is None and self.lost is not None:
            return Verdict(f"{self.lost}'s smsupervise disappeared while the job ran.", adopted, tail)
        if first is None and self.silent is not None:
            timeout = f"{self.plan.options.peer_timeout:g}"
            words = (
                f"{self.silent} went silent: its smsupervise sent nothing for {timeout} s "
                "(--peer-timeout: a network partition, or the host stopped) while the job ran."
            )
            return Verdict(words, adopted, tail)
        return Verdict(root_cause(first, me) if first is not None else None, adopted, tail)

    async def _remove_rank_logs(self) -> None:
        """torchrun's per-rank files were ours (PET_LOG_DIR): read, so removed (off the loop)."""
        if self.plan.rank_log_dir is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(shutil.rmtree, self.plan.rank_log_dir, ignore_errors=True)

    def _local_tail(self, report: Report) -> bytes | None:
        """With rank files, the failure file's stderr is the failing rank's (else the first with any)."""
        if self.rank_logs is None:
            return None
        ranks = sorted(self.rank_logs.tails)
        if report.rank is not None:
            ranks.insert(0, report.rank)
        return next((self.rank_logs.tail(r) for r in ranks if self.rank_logs.tail(r)), None)

    def _report(self, ending: Ending, me: str, failed_here: bool) -> Report:
        launch = self.plan.launch
        per_host = launch.processes_per_host if launch is not None else 1
        failed = attribution.first_failed(ending.stderr_tail, per_host) if failed_here else None
        raw = ending.stderr_tail
        if failed is not None and self.rank_logs is not None and self.rank_logs.tail(failed.rank):
            raw = self.rank_logs.tail(failed.rank)
        tail = raw.decode("utf-8", "replace").strip()[-TAIL_CHARS:]
        return Report(
            "failed" if failed_here else "done",
            me,
            ending.exit_code,
            ending.headline[:HEADLINE_LIMIT],  # the peers refuse a longer one
            ending.ended_at,
            failed.rank if failed else None,
            failed.local_rank if failed else None,
            tail,
        )


def headline(status: ExitStatus) -> str:
    """How the training process (the launcher, or the rank that failed first) ended, in words."""
    if status.signal is not None:
        return f"Training was killed by {signal_name(status.signal)} (exit {status.shell_code()})"
    return f"Training exited with code {status.code}"


def root_cause(report: Report, me: str) -> str:
    """The failure file's first lines: which host and rank failed first (and, when it was another
    host, its headline and last stderr)."""
    rank = "" if report.rank is None else f"rank {report.rank} (local_rank {report.local_rank}) on "
    if report.host == me:
        return f"First failure in the cluster: {rank}this host, {me}."
    text = f"First failure in the cluster: {rank}{report.host}: {report.headline.rstrip('.')}."
    if report.tail:
        text += f"\nLast stderr of {report.host}:\n{report.tail}"
    return text + "\nOn this host:"


def wall_clock() -> float:
    return time.time()
