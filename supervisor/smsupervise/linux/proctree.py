"""Read-only views of the process tree from /proc: who descends from whom."""

from __future__ import annotations

import os
from collections.abc import Collection


def _parent_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:  # ended while we looked
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        rest = raw[raw.rfind(b")") + 2 :].split()
        if len(rest) > 1:
            parents[int(entry.name)] = int(rest[1])
    return parents


def children(parent: int) -> list[int]:
    """The live direct children of ``parent`` (a launcher's ranks)."""
    return sorted(pid for pid, ppid in _parent_map().items() if ppid == parent)


def alive(pid: int) -> bool:
    """Whether ``pid`` still exists (a zombie counts until its parent reaps it)."""
    return os.path.exists(f"/proc/{pid}")


def descendants(root: int, skip: Collection[int] = ()) -> list[int]:
    """Every live process below ``root`` (children, grandchildren, ...), zombies included; the
    processes in ``skip`` and what is below them are left out."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parent_map().items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    stack = list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        if pid in skip:
            continue
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return sorted(found)


def pipe_holders(inode: int) -> list[int]:
    """Processes (other than us) that have the pipe with this inode open."""
    target = f"pipe:[{inode}]"
    me = os.getpid()
    holders = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry.name}/fd/{fd}") == target:
                    holders.append(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(holders)


def zombie_status(pid: int) -> int | None:
    """The raw wait status of ``pid`` while it is a zombie (its parent has not reaped it yet), from
    ``/proc/<pid>/stat``'s last field (Linux >= 3.5); None while it runs or once it is reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    rest = raw[raw.rfind(b")") + 2 :].split()
    if len(rest) < 50 or rest[0] != b"Z":  # exit_code is field 52: the 50th after the name
        return None
    return int(rest[-1])


def environment_value(pid: int, name: str) -> str | None:
    """One variable of ``pid``'s environment as it was exec'd with (None: unset or gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            entries = environ.read().split(b"\0")
    except OSError:
        return None
    prefix = name.encode() + b"="
    found = next((e[len(prefix) :] for e in entries if e.startswith(prefix)), None)
    return None if found is None else found.decode(errors="replace")
