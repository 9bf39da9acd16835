"""One walk of /proc: every process below a root, with its parent, state, RSS and start time, read
from ``/proc/<pid>/stat`` alone: one open and one read per process on the machine (raw
``os.open``/``os.read``, a third of a file object's cost), and only the job's lines parsed whole.
A process that is a zombie carries its raw wait status (Linux >= 3.5), so a death is seen with its
cause while the parent has not reaped it yet.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import NamedTuple

PAGE = os.sysconf("SC_PAGE_SIZE")
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")


class Proc(NamedTuple):
    """One process as /proc/<pid>/stat shows it."""

    pid: int
    ppid: int
    state: str  # R, S, D, Z, ...
    rss: int  # bytes
    started: int  # clock ticks after boot: with the pid, an identity that survives pid reuse
    comm: str
    wait_status: int | None  # a zombie's raw wait status; None while it runs
    env_start: int = 0  # where its environment starts: changes at every exec (0: not shown)


class RankEnv(NamedTuple):
    """What a process's environment says about its rank (as it was exec'd with)."""

    rank: int | None
    local_rank: int | None


def parse_stat(pid: int, raw: bytes) -> Proc | None:
    """A ``/proc/<pid>/stat`` line -> Proc; None if it is not one."""
    close = raw.rfind(b")")
    if close < 0:
        return None
    comm = raw[raw.find(b"(") + 1 : close].decode(errors="replace")
    rest = raw[close + 2 :].split()
    if len(rest) < 22:
        return None
    try:
        state = rest[0].decode()
        status = int(rest[-1]) if state == "Z" and len(rest) >= 50 else None
        env_start = int(rest[47]) if len(rest) >= 50 else 0  # field 50 (Linux >= 3.5)
        return Proc(pid, int(rest[1]), state, int(rest[21]) * PAGE, int(rest[19]), comm, status, env_start)
    except ValueError:
        return None


def job(root: int, skip: Collection[int] = ()) -> dict[int, Proc]:
    """The processes below ``root`` (any depth), ``skip`` and what is below them left out: every
    stat is read (the parent links are needed), only the job's are parsed whole."""
    raws: dict[int, bytes] = {}
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # ended while we looked
            continue
        try:
            raw = os.read(fd, 4096)
        except OSError:
            continue
        finally:
            os.close(fd)
        head = raw[raw.rfind(b")") + 2 :].split(maxsplit=2)
        if len(head) > 1 and head[1].isdigit():
            pid = int(name)
            raws[pid] = raw
            children.setdefault(int(head[1]), []).append(pid)
    found: dict[int, Proc] = {}
    stack = list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        if pid in skip or pid in found:
            continue
        proc = parse_stat(pid, raws[pid])
        if proc is not None:
            found[pid] = proc
        stack.extend(children.get(pid, ()))
    return found


def _first_int(values: dict[bytes, bytes], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = values.get(name.encode())
        if value is not None:
            try:
                return int(value)
            except ValueError:
                continue
    return None


def rank_env(pid: int) -> RankEnv | None:
    """The rank variables of ``pid``'s environment; None if it cannot be read (gone, not ours)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            entries = environ.read().split(b"\0")
    except OSError:
        return None
    values = dict(entry.partition(b"=")[::2] for entry in entries if b"=" in entry)
    return RankEnv(_first_int(values, RANK_VARIABLES), _first_int(values, LOCAL_RANK_VARIABLES))


def sigkill_pending(pid: int) -> bool:
    """Whether ``pid`` has a SIGKILL pending (it is being killed and has not exited yet)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            lines = status.read().splitlines()
    except OSError:
        return False
    for line in lines:
        if line.startswith((b"SigPnd:", b"ShdPnd:")):
            try:
                if int(line.split()[1], 16) & (1 << 8):  # bit N-1 for signal N
                    return True
            except (IndexError, ValueError):
                continue
    return False
