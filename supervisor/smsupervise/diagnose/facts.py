"""What the diagnosis knows, as typed frozen data: the sampler produces it, ``failureclass``
classifies it and ``sagemaker.outcome`` words it. No logic here beyond formatting sizes.
"""

from __future__ import annotations

from typing import NamedTuple

from smsupervise.core.status import ExitStatus


class ProcView(NamedTuple):
    """One process of the job at one sample."""

    pid: int
    ppid: int
    rss: int  # bytes
    comm: str
    started: int  # clock ticks after boot (identity with the pid)
    rank: int | None  # the rank of the rank process it belongs to (itself or an ancestor)
    local_rank: int | None
    rank_pid: int | None  # the pid of that rank process; == pid for a rank itself
    at: float = 0.0  # monotonic time of the sample its RSS is from
    peak: int = 0  # the highest RSS the samples saw, bytes


class Departure(NamedTuple):
    """A process of the job that was seen alive and is gone: what it was at its last sample."""

    proc: ProcView
    last_seen: float  # monotonic time of the last sample that saw it alive
    noticed: float  # monotonic time its death was noticed
    status: ExitStatus | None  # how it ended, when we saw it (a zombie's status, our own reap)
    workers: int  # processes below it at its last sample (a rank's DataLoader workers)
    workers_rss: int  # their RSS, bytes
    peak_rss: int | None = None  # its peak RSS (and its reaped children's), when we reaped it: wait4
    seen: bool = True  # False: it died before any sample saw it (only our reap tells of it)


class OomKill(NamedTuple):
    """One kill by the kernel's OOM killer, known from a counter that moved."""

    victim: Departure | None  # None: the counter moved, the sampler did not see which process
    by_status: bool  # the victim is known by its SIGKILL death, not only by being the largest gone
    counter: str  # which counter moved, e.g. "cgroup v1 memory.oom_control"
    limit: int | None  # the memory cgroup's limit (None: none, or no cgroup)
    usage: int | None  # the cgroup's usage at the last sample before the kill
    available: int | None  # MemAvailable at that sample
    main: bool  # the victim is the job's main process (what smsupervise started)


class MemoryState(NamedTuple):
    """The sampler's last view of memory."""

    cgroup: str | None  # "v2 /sys/fs/cgroup/..." or None
    usage: int | None
    limit: int | None
    oom_kills: int  # kills counted since the start
    psi_some_avg10: float | None
    psi_full_avg10: float | None
    job_rss: int  # the sum over the job's processes
    largest: ProcView | None


class FsState(NamedTuple):
    """One filesystem the job uses (deduplicated by device), at one sample."""

    paths: tuple[str, ...]  # the job's paths on it, e.g. ("/opt/ml/model", "/opt/ml/output")
    mount: str  # its mount point
    fstype: str
    device: int
    size: int  # bytes
    free: int  # bytes available to an unprivileged writer
    inodes: int
    inodes_free: int
    peak_used: float  # the highest share of bytes or inodes used seen so far, 0-1

    @property
    def used(self) -> float:
        """The share of bytes or inodes in use now, whichever is higher (0-1)."""
        by_bytes = 1 - self.free / self.size if self.size else 0.0
        by_inodes = 1 - self.inodes_free / self.inodes if self.inodes else 0.0
        return max(by_bytes, by_inodes)

    @property
    def inodes_short(self) -> bool:
        """Whether it is out of inodes rather than bytes."""
        return bool(self.inodes) and self.inodes_free == 0 and self.free > 0


class FullFs(NamedTuple):
    """A filesystem named as the cause of a failure, with what filled it and where there is room."""

    fs: FsState
    filled_by: tuple[tuple[str, int], ...]  # the largest files found on it (path, bytes)
    room: FsState | None  # the job's filesystem with the most room, another device


class Diagnosis(NamedTuple):
    """Everything the diagnosis has to say about an ended run."""

    oom: tuple[OomKill, ...] = ()
    full: FullFs | None = None  # ENOSPC in the tail: the full filesystem
    shm: FsState | None = None  # a bus error: /dev/shm as it was (None: not mounted / not ours)
    bus_error: bool = False  # SIGBUS, or a DataLoader's bus error, in what ended the job
    enospc: bool = False  # "No space left on device" / errno 28 in the job's last lines
    counter: str | None = None  # the OOM-kill counter watched (None: none could be read)
    exit_hang: str | None = None  # the exit-hang guard stopped the job: what had ended (a rank)


def size(value: int | None) -> str:
    """1.5 GiB, 64.0 MiB, 512 B; "unknown" for None."""
    if value is None:
        return "unknown"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if round(amount, 1) < 1024 or unit == "TiB":  # 1023.96 MiB is 1.0 GiB, not "1024.0 MiB"
            return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")
