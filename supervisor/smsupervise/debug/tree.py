"""The job's live process tree from /proc, like ``ps xfaww`` but of the job, with what ps lacks:
CPU% over an interval, what each process waits on, its rank, and whether it ignores SIGTERM.

Pure reading of /proc: no signals, no ptrace. Fields a kernel or a permission hides come back
empty rather than failing the view (a process may also end while we look).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping
from typing import NamedTuple

TERM_BIT = 1 << (15 - 1)
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")

# Syscall numbers worth naming in "waits on" (x86_64 and aarch64); the fd is their first argument.
_SYSCALLS = {
    "x86_64": {0: "read", 1: "write", 7: "poll", 23: "select", 35: "nanosleep", 43: "accept",
               45: "recvfrom", 47: "recvmsg", 61: "wait4", 202: "futex", 230: "clock_nanosleep",
               232: "epoll_wait", 247: "waitid", 270: "pselect6", 271: "ppoll", 281: "epoll_pwait",
               288: "accept4", 34: "pause", 130: "rt_sigsuspend", 128: "rt_sigtimedwait"},
    "aarch64": {63: "read", 64: "write", 101: "nanosleep", 202: "accept", 207: "recvfrom",
                212: "recvmsg", 260: "wait4", 98: "futex", 115: "clock_nanosleep", 95: "waitid",
                72: "pselect6", 73: "ppoll", 22: "epoll_pwait", 242: "accept4", 133: "rt_sigsuspend",
                137: "rt_sigtimedwait"},
}  # fmt: skip
_FD_CALLS = {"read", "write", "accept", "accept4", "recvfrom", "recvmsg"}


class Proc(NamedTuple):
    """One process as /proc showed it at one moment."""

    pid: int
    ppid: int
    pgid: int
    state: str  # R, S, D, Z, T, ...
    comm: str
    argv: tuple[str, ...]
    threads: int
    rss: int  # bytes
    cpu_ticks: int  # utime + stime, in clock ticks
    wchan: str
    waits_on: str
    rank: str | None
    local_rank: str | None
    sig_ignored: int
    sig_blocked: int  # blocked in every thread: a process signal cannot be delivered
    sig_caught: int

    @property
    def zombie(self) -> bool:
        return self.state == "Z"

    def term_warning(self) -> str | None:
        """Why SIGTERM will not end this process, or None."""
        if self.zombie:
            return None
        if self.sig_ignored & TERM_BIT:
            return "ignores SIGTERM: the stop will end in SIGKILL"
        if self.sig_blocked & TERM_BIT:
            return "blocks SIGTERM: the stop will end in SIGKILL"
        return None


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None


def parse_stat(raw: bytes) -> tuple[str, list[bytes]]:
    """The command name and the fields after it (state first); the name may hold ``)`` and spaces."""
    start, end = raw.find(b"("), raw.rfind(b")")
    return raw[start + 1 : end].decode(errors="replace"), raw[end + 2 :].split()


def _status_masks(pid: int) -> tuple[int, int]:
    """(SigIgn, SigCgt) of the process."""
    fields: dict[str, int] = {}
    for line in (_read(f"/proc/{pid}/status") or b"").splitlines():
        key, _, value = line.partition(b":")
        if key in (b"SigIgn", b"SigCgt"):
            fields[key.decode()] = int(value.strip(), 16)
    return fields.get("SigIgn", 0), fields.get("SigCgt", 0)


def _blocked_everywhere(pid: int) -> int:
    """The signals every thread blocks (a process-directed signal then stays pending)."""
    mask = ~0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        for line in (_read(f"/proc/{pid}/task/{tid}/status") or b"").splitlines():
            if line.startswith(b"SigBlk:"):
                mask &= int(line.split()[1], 16)
    return 0 if mask == ~0 else mask


def environ(pid: int) -> dict[str, str]:
    """The environment the process was started with (empty when not readable)."""
    found: dict[str, str] = {}
    for entry in (_read(f"/proc/{pid}/environ") or b"").split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            found[key.decode(errors="replace")] = value.decode(errors="replace")
    return found


def _first(env: Mapping[str, str], names: Iterable[str]) -> str | None:
    return next((env[name] for name in names if name in env), None)


def waits_on(pid: int, state: str) -> str:
    """What a sleeping process is blocked in: the syscall, and the fd's target for I/O calls."""
    if state in ("R", "Z"):
        return ""
    raw = (_read(f"/proc/{pid}/syscall") or b"").split()
    if not raw or raw[0] in (b"running", b"-1"):
        return ""
    name = _SYSCALLS.get(platform.machine(), {}).get(int(raw[0]), f"syscall {int(raw[0])}")
    if name in _FD_CALLS and len(raw) > 1:
        fd = int(raw[1], 16)
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            target = "?"
        return f"{name} fd {fd} ({target})"
    if name in ("wait4", "waitid"):
        return f"{name} (a child)"
    return name


def read_proc(pid: int) -> Proc | None:
    """One process's view, or None if it is gone."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    comm, rest = parse_stat(raw)
    state = rest[0].decode()
    argv = tuple(a.decode(errors="replace") for a in (_read(f"/proc/{pid}/cmdline") or b"").split(b"\0") if a)
    env = environ(pid)
    ignored, caught = _status_masks(pid)
    return Proc(
        pid=pid,
        ppid=int(rest[1]),
        pgid=int(rest[2]),
        state=state,
        comm=comm,
        argv=argv,
        threads=int(rest[17]),
        rss=int(rest[21]) * PAGE,
        cpu_ticks=int(rest[11]) + int(rest[12]),
        wchan=(_read(f"/proc/{pid}/wchan") or b"").decode(errors="replace").strip("0\n") or "",
        waits_on=waits_on(pid, state),
        rank=_first(env, RANK_VARIABLES),
        local_rank=_first(env, LOCAL_RANK_VARIABLES),
        sig_ignored=ignored,
        sig_blocked=_blocked_everywhere(pid),
        sig_caught=caught,
    )


def leftover(pid: int) -> dict[str, object] | None:
    """What ``status`` shows of a process left behind: pid, parent, group, state and argv (the
    command name in brackets when it has none, as for a zombie); None if it is gone."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    comm, rest = parse_stat(raw)
    cmdline = _read(f"/proc/{pid}/cmdline") or b""
    argv = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
    return {
        "pid": pid,
        "ppid": int(rest[1]),
        "pgid": int(rest[2]),
        "state": rest[0].decode(),
        "argv": argv or [f"[{comm}]"],
    }


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            raw = _read(f"/proc/{entry.name}/stat")
            if raw is not None:
                parents[int(entry.name)] = int(parse_stat(raw)[1][1])
    return parents


def subtree(root: int) -> list[int]:
    """``root`` and every process below it, parents before children."""
    children: dict[int, list[int]] = {}
    for pid, ppid in sorted(_parents().items()):
        children.setdefault(ppid, []).append(pid)
    order: list[int] = []
    stack = [root]
    while stack:
        pid = stack.pop()
        order.append(pid)
        stack.extend(reversed(children.get(pid, [])))
    return order


def snapshot(root: int) -> list[Proc]:
    """Every process of the tree at ``root`` (those that ended meanwhile are left out)."""
    return [proc for proc in map(read_proc, subtree(root)) if proc is not None]


def cpu_percent(before: Iterable[Proc], after: Iterable[Proc], seconds: float) -> dict[int, float]:
    """CPU% per pid between two snapshots ``seconds`` apart (100 = one core)."""
    ticks = os.sysconf("SC_CLK_TCK")
    start = {proc.pid: proc.cpu_ticks for proc in before}
    return {
        proc.pid: round(100.0 * (proc.cpu_ticks - start[proc.pid]) / ticks / seconds, 1)
        for proc in after
        if proc.pid in start and seconds > 0
    }


def signal_names(mask: int) -> list[str]:
    """The signal names in a /proc signal mask (bit N-1 is signal N)."""
    import signal  # noqa: PLC0415

    names = []
    for number in range(1, 65):
        if mask & (1 << (number - 1)):
            try:
                names.append(signal.Signals(number).name)
            except ValueError:
                names.append(f"SIG{number}")
    return names


def record(proc: Proc, depth: int, cpu: Mapping[int, float]) -> dict[str, object]:
    """One row of the tree as JSON-ready data (``depth`` 0 is the root)."""
    return {
        "pid": proc.pid,
        "ppid": proc.ppid,
        "pgid": proc.pgid,
        "depth": depth,
        "state": proc.state,
        "zombie": proc.zombie,
        "cpu_percent": cpu.get(proc.pid),
        "rss": proc.rss,
        "threads": proc.threads,
        "wchan": proc.wchan,
        "waits_on": proc.waits_on,
        "rank": proc.rank,
        "local_rank": proc.local_rank,
        "ignores": signal_names(proc.sig_ignored),
        "blocks": signal_names(proc.sig_blocked),
        "catches": signal_names(proc.sig_caught),
        "warning": proc.term_warning(),
        "comm": proc.comm,
        "argv": list(proc.argv),
    }


def records(procs: list[Proc], cpu: Mapping[int, float]) -> list[dict[str, object]]:
    """The rows of a snapshot in tree order, each with its depth below the first process."""
    depth: dict[int, int] = {}
    rows = []
    for proc in procs:
        depth[proc.pid] = depth.get(proc.ppid, -1) + 1 if proc.pid != procs[0].pid else 0
        rows.append(record(proc, depth[proc.pid], cpu))
    return rows
