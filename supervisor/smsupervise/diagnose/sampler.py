"""The sampler: one cheap look at the job every ``--sample-interval`` seconds (one /proc walk, a few
small cgroup files, one statvfs per filesystem), a ``Service`` on the supervisor's loop.

It keeps the last view of every process of the job (RSS, rank), notices deaths (with their cause
when it sees it: a zombie's status, or a status our reaper hands over), moves the OOM-kill counter
forward and attributes each kill to a departed process (``memory.victims``), warns on memory
pressure and on filling filesystems, and at the end turns all of it into a ``Diagnosis``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from collections.abc import Callable, Collection
from typing import Any

from smsupervise.core.status import ExitStatus
from smsupervise.diagnose import disks, memory
from smsupervise.diagnose.facts import Departure, Diagnosis, FsState, MemoryState, OomKill, ProcView
from smsupervise.linux import cgroups, procstat
from smsupervise.streams.events import EventLog

FULL = 0.99  # a filesystem this full (its peak) explains a write that failed without an errno
KEEP_REAPED = 256  # statuses handed over by the reaper, kept until a sample matches them
# How long a counter's move waits for its victim to be seen gone (an OOM victim's exit can take
# seconds on a loaded machine): this many samples, and at least WAIT_SECONDS.
WAIT_FOR_VICTIM = 3
WAIT_SECONDS = 10.0


class Sampler:
    """Samples the job below ``root`` (our pid) every ``interval`` seconds; a ``Service``."""

    def __init__(
        self,
        log: EventLog,
        interval: float,
        paths: tuple[str, ...],
        *,
        skip: Callable[[], Collection[int]] = frozenset,
        host: str | None = None,
        main: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.log = log
        self.interval = interval
        self.paths = paths
        self.skip = skip  # the debug socket's siblings: not the job
        self.host = host
        self.root = os.getpid()
        self.main = main  # the job's main process (what smsupervise started), if any
        self.cgroup: cgroups.MemoryCgroup | None = None
        self.counter_source = "none"
        self._counter: int | None = None
        self._pending = 0  # kills counted, not yet attributed
        self._pending_ticks = 0
        self._pending_since = 0.0
        # By pid, start time and where its environment lies (an exec moves it: a child read between
        # its fork and its exec would otherwise keep its parent's environment).
        self._envs: dict[tuple[int, int, int], procstat.RankEnv | None] = {}
        self._reaped: collections.OrderedDict[int, tuple[ExitStatus, int]] = collections.OrderedDict()
        self.live: dict[int, ProcView] = {}
        self._gone: list[Departure] = []  # departures not yet matched to a counter's move
        self._main_ended = False  # the main process's death is recorded
        self.first_rank: int | None = None  # the lowest RANK seen on this host
        self.on_rank_left: Callable[[Departure], None] | None = None  # this host's first rank gone
        self.on_rank_started: Callable[[ProcView], None] | None = None  # a rank new since the last sample
        self._ended: set[tuple[int, int]] = set()  # (pid, start) of deaths known before they left /proc
        self.kills: list[OomKill] = []
        self.filesystems: list[FsState] = []
        self.memory = MemoryState(None, None, None, 0, None, None, 0, None)
        self._gate = memory.PressureGate()
        self._available: int | None = None
        self.ticks = 0
        self.cost = 0.0  # seconds spent sampling, all ticks
        self._timer: asyncio.TimerHandle | None = None
        self._begun = False

    # -- Service -------------------------------------------------------------------------------
    def start(self) -> None:
        """Soon (after the job is spawned: start-up latency is not ours to spend), ``begin``."""
        asyncio.get_running_loop().call_soon(self.begin)

    def begin(self) -> None:
        """Read the baseline (counters, filesystems), log the layout, schedule the first sample."""
        if self._begun:
            return  # begun already (conclude of a run that ended at once)
        self._begun = True
        self.cgroup = cgroups.memory_cgroup()
        self._counter = self._read_counter()
        reading = cgroups.read_memory(self.cgroup) if self.cgroup is not None else None
        self.log.info(
            "memory_layout",
            cgroup=None if self.cgroup is None else f"v{self.cgroup.version} {self.cgroup.path}",
            limit=None if reading is None else reading.limit,
            usage=None if reading is None else reading.usage,
            oom_counter=self.counter_source,
            psi=cgroups.read_pressure(self.cgroup) is not None,
            available=cgroups.mem_available(),
        )
        self.filesystems = disks.layout(self.paths)
        self.log.info("disk_layout", filesystems=[_fs_fields(fs) for fs in self.filesystems])
        if self.interval > 0:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def reaped(self, pid: int, status: ExitStatus, peak_rss: int = 0) -> None:
        """The reaper collected ``pid`` (ours: the main process, an orphan): its cause is known,
        and its peak RSS."""
        self._reaped[pid] = (status, peak_rss)
        while len(self._reaped) > KEEP_REAPED:
            self._reaped.popitem(last=False)

    # -- sampling ------------------------------------------------------------------------------
    def _tick(self) -> None:
        self.sample()
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _read_counter(self) -> int | None:
        if self.cgroup is not None:
            kills = cgroups.read_memory(self.cgroup).oom_kills
            if kills is not None:
                self.counter_source = (
                    "cgroup v2 memory.events" if self.cgroup.version == 2 else "cgroup v1 memory.oom_control"
                )
                return kills
        kills = cgroups.system_oom_kills()
        if kills is not None:
            self.counter_source = "/proc/vmstat (the whole machine)"
        return kills

    def sample(self) -> None:
        """One look: processes, deaths, the OOM counter, memory pressure, filesystems."""
        began = time.perf_counter()
        now = time.monotonic()
        counter = self._read_counter()  # first: a kill counted now was done before the walk
        self._walk(now)
        self._memory()
        if counter is not None and self._counter is not None and counter > self._counter:
            self._pending += counter - self._counter
            self._dying(now)
        if counter is not None:
            self._counter = counter
        self._attribute(final=False)
        self._disks()
        self.ticks += 1
        self.cost += time.perf_counter() - began

    def _walk(self, now: float) -> None:
        job = procstat.job(self.root, self.skip())
        zombies = {pid: p for pid, p in job.items() if p.state == "Z"}
        running = {pid: p for pid, p in job.items() if p.state != "Z"}
        views = self._views(running, now)
        main = self.main()
        if main in zombies and main in self.live and main not in self._reaped:
            views[main] = self.live[main]  # ours to reap: wait for the reaper's status and peak RSS
        self._departures(views, zombies, now)
        self._ranks(views)
        self.live = views
        self._ended = {key for key in self._ended if key[0] in views}
        alive = {(p.pid, p.started, p.env_start) for p in running.values()}
        self._envs = {key: env for key, env in self._envs.items() if key in alive}

    def _views(self, running: dict[int, procstat.Proc], now: float) -> dict[int, ProcView]:
        """The job's live processes, each with the rank process it belongs to."""
        envs = {pid: self._env(p) for pid, p in running.items()}

        def is_rank(pid: int) -> bool:
            env = envs.get(pid)
            parent = envs.get(running[pid].ppid)
            return env is not None and env.rank is not None and (parent is None or parent.rank is None)

        views: dict[int, ProcView] = {}
        for pid, proc in running.items():
            owner: int | None = pid
            while owner is not None and owner in running and not is_rank(owner):
                owner = running[owner].ppid
            owner = owner if owner in running else None
            env = envs.get(owner) if owner is not None else None
            before = self.live.get(pid)
            same = before is not None and before.started == proc.started
            if proc.rss == 0 and before is not None and same:
                # Its memory is gone and it is not a zombie yet: being killed (the OOM reaper frees
                # a victim's memory before it exits). Its last RSS is the one that tells.
                views[pid] = before
                continue
            views[pid] = ProcView(
                pid,
                proc.ppid,
                proc.rss,
                proc.comm,
                proc.started,
                env.rank if env is not None else None,
                env.local_rank if env is not None else None,
                owner,
                now,
                max(proc.rss, before.peak if before is not None and same else 0),
            )
        return views

    def _departures(self, views: dict[int, ProcView], zombies: dict[int, procstat.Proc], now: float) -> None:
        """The processes of the last sample that are gone (or zombies) now, with their cause."""
        main = self.main()
        for pid, seen in self.live.items():
            current = views.get(pid)
            if current is not None and current.started == seen.started:
                continue
            if (pid, seen.started) in self._ended:  # its death is known already (SIGKILL pending)
                self._reaped.pop(pid, None)
                continue
            zombie = zombies.get(pid)
            status, peak = self._reaped.pop(pid, (None, None))
            if status is None and zombie is not None and zombie.wait_status is not None:
                status = _status(zombie.wait_status)
            below = _below(pid, self.live)
            workers_rss = sum(self.live[p].rss for p in below)
            departure = Departure(seen, seen.at, now, status, len(below), workers_rss, peak)
            self._gone.append(departure)
            if pid == main:
                self._main_ended = True
            elif self._is_first_rank(seen) and self.on_rank_left is not None and main in views:
                self.on_rank_left(departure)
        if main is not None and main in self._reaped and main not in self.live and not self._main_ended:
            self._main_ended = True
            status, peak = self._reaped.pop(main)  # it died before any sample saw it
            view = ProcView(main, self.root, peak, "", 0, None, None, None, now, peak)
            self._gone.append(Departure(view, now, now, status, 0, 0, peak, seen=False))

    def _ranks(self, views: dict[int, ProcView]) -> None:
        """This host's first rank number; a rank that is new since the last sample."""
        for view in views.values():
            if view.rank is None or view.rank_pid != view.pid:
                continue
            self.first_rank = view.rank if self.first_rank is None else min(self.first_rank, view.rank)
            fresh = view.pid not in self.live or self.live[view.pid].started != view.started
            if fresh and self.live and self.on_rank_started is not None:
                self.on_rank_started(view)

    def _is_first_rank(self, view: ProcView) -> bool:
        return view.rank is not None and view.rank_pid == view.pid and view.rank == self.first_rank

    def _dying(self, now: float) -> None:
        """The counter moved: a victim still exiting has SIGKILL pending. Its death is known now."""
        for pid, view in self.live.items():
            if pid != self.main() and procstat.sigkill_pending(pid):
                below = _below(pid, self.live)
                killed = ExitStatus(signal=signal.SIGKILL)
                workers_rss = sum(self.live[p].rss for p in below)
                self._gone.append(Departure(view, view.at, now, killed, len(below), workers_rss))
                self._ended.add((pid, view.started))

    def _env(self, proc: procstat.Proc) -> procstat.RankEnv | None:
        key = (proc.pid, proc.started, proc.env_start)
        if key not in self._envs:
            self._envs[key] = procstat.rank_env(proc.pid)
        return self._envs[key]

    def _memory(self) -> None:
        reading = cgroups.read_memory(self.cgroup) if self.cgroup is not None else None
        pressure = cgroups.read_pressure(self.cgroup)
        self._available = cgroups.mem_available()
        largest = max(self.live.values(), key=lambda v: v.rss, default=None)
        self.memory = MemoryState(
            None if self.cgroup is None else f"v{self.cgroup.version} {self.cgroup.path}",
            None if reading is None else reading.usage,
            None if reading is None else reading.limit,
            len(self.kills),
            None if pressure is None else pressure.some_avg10,
            None if pressure is None else pressure.full_avg10,
            sum(v.rss for v in self.live.values()),
            largest,
        )
        state = self.memory
        if self._gate.check(state.usage, state.limit, state.psi_full_avg10):
            self.log.warning(
                "memory_pressure",
                usage=state.usage,
                limit=state.limit,
                psi_full_avg10=state.psi_full_avg10,
                job_rss=state.job_rss,
                largest=None if largest is None else _proc_fields(largest),
            )

    def _attribute(self, *, final: bool) -> None:
        if self._pending == 0:
            self._gone = []  # deaths before a counter's move are not its victims
            return
        if self._pending_ticks == 0:
            self._pending_since = time.monotonic()
        waited = time.monotonic() - self._pending_since
        if not self._gone and not final and (self._pending_ticks < WAIT_FOR_VICTIM or waited < WAIT_SECONDS):
            self._pending_ticks += 1  # the victim may still be exiting: wait for it
            return
        state = self.memory
        found = memory.victims(
            self._pending,
            self._gone,
            counter=self.counter_source,
            limit=state.limit,
            usage=state.usage,
            available=self._available,
            main_pid=self.main(),
        )
        self._pending, self._pending_ticks, self._gone = 0, 0, []
        for kill in found:
            self.kills.append(kill)
            self.log.error("oom_killed", **_kill_fields(kill, self.host))

    def _disks(self) -> None:
        fresh = []
        for state in self.filesystems:
            new = disks.refresh(state)
            level = disks.crossed(state.used, new.used)
            if level is not None:
                self.log.warning("disk_filling", level=f"{level:.0%}", **_fs_fields(new))
            fresh.append(new)
        self.filesystems = fresh

    # -- the end -------------------------------------------------------------------------------
    def conclude(self, status: ExitStatus | None, tail: bytes) -> Diagnosis:
        """The run ended: one last sample (the main process's status known), every counted kill
        attributed, and what the failure's last lines say about space and bus errors."""
        self.begin()
        main_pid = self.main()
        known = main_pid in self._reaped or self._main_ended
        if main_pid is not None and status is not None and not known:
            self.reaped(main_pid, status)
        clean = status is not None and status.ok
        if not clean or self._pending:  # a clean exit needs no last look (exec mode's exit latency)
            self.sample()
            self._attribute(final=True)
        bus = (status is not None and status.signal == signal.SIGBUS) or disks.bus_error(tail)
        full = disks.fullest(self.filesystems)
        seen_full = full is not None and full.peak_used >= FULL
        nospace = disks.enospc(tail) or (disks.write_failed(tail) and seen_full)
        return Diagnosis(
            oom=tuple(self.kills),
            full=disks.full_filesystem(self.filesystems) if nospace else None,
            shm=disks.fullest(self.filesystems, shm=True) if bus else None,
            bus_error=bus,
            enospc=nospace,
            counter=None if self._counter is None else self.counter_source,
        )

    def snapshot(self) -> dict[str, Any]:
        """The last view, for ``smsupervise-debug status``."""
        state = self.memory
        return {
            "memory": {
                "cgroup": state.cgroup,
                "usage": state.usage,
                "limit": state.limit,
                "psi_some_avg10": state.psi_some_avg10,
                "psi_full_avg10": state.psi_full_avg10,
                "job_rss": state.job_rss,
                "oom_counter": self.counter_source,
                "oom_kills": len(self.kills),
                "processes": [_proc_fields(v) for v in sorted(self.live.values(), key=lambda v: -v.rss)[:8]],
            },
            "filesystems": [_fs_fields(fs) for fs in self.filesystems],
            "sampler": {
                "interval": self.interval,
                "samples": self.ticks,
                "mean_ms": round(1000 * self.cost / self.ticks, 3) if self.ticks else None,
            },
        }


def _status(raw: int) -> ExitStatus | None:
    try:
        return ExitStatus.from_wait_status(raw)
    except ValueError:
        return None


def _below(pid: int, live: dict[int, ProcView]) -> list[int]:
    found, stack = [], [pid]
    children: dict[int, list[int]] = {}
    for view in live.values():
        children.setdefault(view.ppid, []).append(view.pid)
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found


def _proc_fields(view: ProcView) -> dict[str, Any]:
    return {"pid": view.pid, "comm": view.comm, "rank": view.rank, "rss": view.rss}


def _fs_fields(fs: FsState) -> dict[str, Any]:
    return {
        "paths": list(fs.paths),
        "mount": fs.mount,
        "fstype": fs.fstype,
        "size": fs.size,
        "free": fs.free,
        "inodes": fs.inodes,
        "inodes_free": fs.inodes_free,
        "used": round(fs.used, 4),
    }


def _kill_fields(kill: OomKill, host: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"counter": kill.counter, "limit": kill.limit, "host": host}
    victim = kill.victim
    if victim is None:
        return {**fields, "victim": None}
    proc = victim.proc
    return {
        **fields,
        "pid": proc.pid,
        "comm": proc.comm,
        "rank": proc.rank,
        "local_rank": proc.local_rank,
        "rank_pid": proc.rank_pid,
        "rss": proc.rss if victim.seen else None,
        "rss_age_s": round(victim.noticed - victim.last_seen, 3) if victim.seen else None,
        "peak_rss": victim.peak_rss,
        "workers": victim.workers,
        "workers_rss": victim.workers_rss,
        "known_by": "its SIGKILL death" if kill.by_status else "largest process gone",
        "main": kill.main,
    }
