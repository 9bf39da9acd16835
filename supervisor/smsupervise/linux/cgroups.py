"""Read-only views of the memory cgroup a process is in, and of the kernel's memory counters.

Which files exist depends on the kernel and the container: cgroup v2 (``memory.events``,
``memory.max``, ``memory.current``, ``memory.pressure``), cgroup v1 (``memory.oom_control``,
``memory.limit_in_bytes``, ``memory.usage_in_bytes``), the system-wide ``/proc/vmstat`` and
``/proc/pressure/memory`` (PSI, Linux >= 4.20 with CONFIG_PSI). Every reader returns None for what
it cannot read; nothing here raises for a missing or unreadable file.
"""

from __future__ import annotations

import os
from typing import NamedTuple

V1_UNLIMITED = 1 << 62  # v1 shows "no limit" as PAGE_COUNTER_MAX pages in bytes (~2^63, rounded)


class MemoryCgroup(NamedTuple):
    """A memory cgroup's directory in the mounted hierarchy, and the hierarchy's version."""

    version: int  # 1 or 2
    path: str


class Pressure(NamedTuple):
    """PSI for memory: the share of the last 10 s some / all tasks were stalled on memory (percent)."""

    some_avg10: float
    full_avg10: float


class MemoryReading(NamedTuple):
    """One reading of a memory cgroup (None: not available)."""

    usage: int | None  # bytes charged to the cgroup (page cache included)
    limit: int | None  # None: no limit
    oom_kills: int | None  # the cgroup's OOM-kill counter


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(root within the filesystem, mount point, filesystem type, super options) of each mount."""
    found = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        point = fields[4].replace("\\040", " ")
        found.append((fields[3], point, tail[0], set(tail[2].split(","))))
    return found


def memory_cgroup(pid: int | str = "self") -> MemoryCgroup | None:
    """The memory cgroup ``pid`` is in, where its files can be read; None if there is none (no
    memory controller, or its hierarchy is not mounted where we can see it)."""
    membership = _read(f"/proc/{pid}/cgroup")
    mountinfo = _read(f"/proc/{pid}/mountinfo")
    if membership is None or mountinfo is None:
        return None
    v1_path = v2_path = None
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    mounts = _mounts(mountinfo)
    if v1_path is not None:  # the memory controller is bound to a v1 hierarchy (hybrid or legacy)
        return _v1(mounts, v1_path)
    return None if v2_path is None else _v2(mounts, v2_path)


def _v1(mounts: list[tuple[str, str, str, set[str]]], path: str) -> MemoryCgroup | None:
    for root, point, fstype, options in mounts:
        if fstype == "cgroup" and "memory" in options:
            found = _under(point, root, path)
            if found is not None:
                return MemoryCgroup(1, found)
    return None


def _v2(mounts: list[tuple[str, str, str, set[str]]], path: str) -> MemoryCgroup | None:
    for root, point, fstype, _ in mounts:
        found = _under(point, root, path) if fstype == "cgroup2" else None
        # The root of a cgroup namespace may list no controllers: its memory.events tells.
        if found is not None and os.path.exists(f"{found}/memory.events"):
            return MemoryCgroup(2, found)
    return None


def _under(point: str, root: str, path: str) -> str | None:
    """Where cgroup ``path`` is in a hierarchy mounted at ``point`` whose mount shows ``root``."""
    if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
        return None
    relative = path[len(root) :] if root != "/" else path
    directory = os.path.join(point, relative.lstrip("/"))
    return directory if os.path.isdir(directory) else None


def _keyed(text: str | None, key: str) -> int | None:
    """The value of ``key`` in a "key value" file (memory.events, memory.oom_control, vmstat)."""
    if text is None:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _number(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def read_memory(cgroup: MemoryCgroup) -> MemoryReading:
    """Usage, limit and OOM-kill counter of ``cgroup`` (three small reads)."""
    if cgroup.version == 2:
        limit_text = _read(f"{cgroup.path}/memory.max")
        limit = None if limit_text is None or limit_text.strip() == "max" else _number(limit_text)
        usage = _number(_read(f"{cgroup.path}/memory.current"))
        kills = _keyed(_read(f"{cgroup.path}/memory.events"), "oom_kill")
        return MemoryReading(usage, limit, kills)
    limit = _number(_read(f"{cgroup.path}/memory.limit_in_bytes"))
    usage = _number(_read(f"{cgroup.path}/memory.usage_in_bytes"))
    kills = _keyed(_read(f"{cgroup.path}/memory.oom_control"), "oom_kill")  # Linux >= 4.13
    return MemoryReading(usage, None if limit is None or limit >= V1_UNLIMITED else limit, kills)


def system_oom_kills() -> int | None:
    """The system-wide OOM-kill counter (``/proc/vmstat`` oom_kill, Linux >= 4.13)."""
    return _keyed(_read("/proc/vmstat"), "oom_kill")


def parse_pressure(text: str | None) -> Pressure | None:
    """``some avg10=1.00 avg60=... total=...`` / ``full avg10=...`` -> Pressure."""
    if text is None:
        return None
    values: dict[str, float] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        for item in rest.split():
            name, _, value = item.partition("=")
            if name == "avg10":
                try:
                    values[kind] = float(value)
                except ValueError:
                    return None
    if "some" not in values:
        return None
    return Pressure(values["some"], values.get("full", 0.0))


def read_pressure(cgroup: MemoryCgroup | None) -> Pressure | None:
    """Memory PSI of the cgroup (v2 ``memory.pressure``), else of the system; None without PSI."""
    if cgroup is not None and cgroup.version == 2:
        found = parse_pressure(_read(f"{cgroup.path}/memory.pressure"))
        if found is not None:
            return found
    return parse_pressure(_read("/proc/pressure/memory"))


def mem_available() -> int | None:
    """MemAvailable of ``/proc/meminfo`` in bytes (the host's, inside a container)."""
    text = _read("/proc/meminfo")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            try:
                return int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return None
    return None
