"""Attach to a job smsupervise did not start (``smsupervise-debug --pid N``): the /proc view only.

Besides the tree (tree.py), what a foreign PID 1 hides: zombies it never reaps, every process's
signal dispositions, and the throughput of Pipe-mode readers. A FIFO's file position stays 0 (the
kernel opens pipes as streams), so a FIFO reader's rate is its ``rchar`` from /proc/PID/io (every
byte it read, from any fd); a regular file's rate is its position from /proc/PID/fdinfo.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from smsupervise.debug import tree


class Reader(NamedTuple):
    """One open input of a process: a FIFO or a regular file it reads, and how far it got."""

    pid: int
    fd: int
    path: str
    fifo: bool
    position: int  # file: fdinfo pos; FIFO: the process's rchar


def _fdinfo(pid: int, fd: str) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as file:
            return dict(line.split(":", 1) for line in file.read().splitlines() if ":" in line)
    except OSError:
        return {}


def _rchar(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/io") as file:
            for line in file:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def readers(pid: int) -> list[Reader]:
    """The FIFOs and regular files ``pid`` has open for reading (not its sockets or ttys)."""
    found = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            mode = os.stat(f"/proc/{pid}/fd/{fd}").st_mode
        except OSError:
            continue
        access = int(_fdinfo(pid, fd).get("flags", "1").strip(), 8) & os.O_ACCMODE
        if not target.startswith("/"):
            continue
        if stat.S_ISFIFO(mode) and access in (os.O_RDONLY, os.O_RDWR):
            found.append(Reader(pid, int(fd), target, True, _rchar(pid)))
        elif stat.S_ISREG(mode) and access == os.O_RDONLY:  # not a log file it writes
            found.append(Reader(pid, int(fd), target, False, int(_fdinfo(pid, fd).get("pos", "0"))))
    return found


def throughput(before: list[Reader], after: list[Reader], seconds: float) -> list[dict[str, object]]:
    """Bytes per second per open input between two samples ``seconds`` apart."""
    start = {(r.pid, r.fd, r.path): r.position for r in before}
    rows = []
    for r in after:
        if (r.pid, r.fd, r.path) in start and seconds > 0:
            rate = (r.position - start[(r.pid, r.fd, r.path)]) / seconds
            rows.append({"pid": r.pid, "fd": r.fd, "path": r.path, "fifo": r.fifo,
                         "bytes_per_s": round(rate), "mb_per_s": round(rate / 1e6, 2)})  # fmt: skip
    return rows


def zombies(procs: list[tree.Proc]) -> dict[str, object]:
    """How many zombies, and under which parents (a parent that never reaps collects them)."""
    parents: dict[int, int] = {}
    for proc in procs:
        if proc.zombie:
            parents[proc.ppid] = parents.get(proc.ppid, 0) + 1
    return {"count": sum(parents.values()), "by_parent": {str(k): v for k, v in sorted(parents.items())}}
