"""The filesystems a job uses: their layout (deduplicated by device), how full they are, and, when
a job fails with ENOSPC or a bus error, which one was full, what filled it and where there is room.

One ``statvfs`` per filesystem per sample; the mount point and type come from
``/proc/self/mountinfo``, read once at start. What filled a full filesystem comes from a bounded
walk of the job's paths on it (at most ``WALK_ENTRIES`` entries), done only after a failure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

from smsupervise.diagnose.facts import FsState, FullFs

LEVELS = (0.90, 0.95, 0.99)  # a ``disk_filling`` warning as each is crossed
WALK_ENTRIES = 20000  # the most directory entries looked at to find what filled a filesystem
TOP_FILES = 3
SHM = "/dev/shm"
# The job's last lines say a write failed for want of space: strerror(ENOSPC), Python's
# "[Errno 28]", C++/Rust renderings ("errno 28", "os error 28"), the name itself.
_ENOSPC = re.compile(rb"No space left on device|\bENOSPC\b|\[Errno 28\]|errno[ =:]*28\b|os error 28", re.I)
# A write that failed without saying why (torch.save's C++ writer), which a full filesystem explains.
_WRITE_FAILED = re.compile(rb"PytorchStreamWriter failed writing|file write failed", re.I)
# A bus error: the shell's/glibc's "Bus error", PyTorch's DataLoader messages.
_BUS = re.compile(rb"\bBus error\b|killed by signal: Bus error|insufficient shared memory", re.I)


def job_paths(base_dir: str, code_dir: str | None) -> tuple[str, ...]:
    """The paths whose filesystems a training job writes to or reads from."""
    paths = ["/", "/tmp", SHM]
    paths += [os.path.join(base_dir, name) for name in ("model", "output", "checkpoints", "input/data")]
    if code_dir:
        paths.append(code_dir)
    return tuple(paths)


def mount_points() -> list[tuple[str, str, int]]:
    """(mount point, filesystem type, device number) of every mount, from our mountinfo."""
    found: list[tuple[str, str, int]] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        major, _, minor = fields[2].partition(":")
        try:
            device = os.makedev(int(major), int(minor))
        except ValueError:
            continue
        found.append((fields[4].replace("\\040", " "), right.split()[0], device))
    return found


def _mount_of(path: str, mounts: Sequence[tuple[str, str, int]]) -> tuple[str, str]:
    """The mount point and type under which ``path`` lives (the longest matching mount point)."""
    best = ("/", "?")
    for point, fstype, _ in mounts:
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fstype)
    return best


def layout(paths: Iterable[str], mounts: Sequence[tuple[str, str, int]] | None = None) -> list[FsState]:
    """The filesystems under ``paths`` that exist, one per device, in the order first met."""
    mounts = mount_points() if mounts is None else mounts
    found: dict[int, FsState] = {}
    for path in paths:
        real = os.path.realpath(path)
        try:
            device = os.stat(real).st_dev
            stats = os.statvfs(real)
        except OSError:
            continue
        known = found.get(device)
        if known is not None:
            found[device] = known._replace(paths=(*known.paths, path))
            continue
        point, fstype = _mount_of(real, mounts)
        state = _state((path,), point, fstype, device, stats, peak=0.0)
        found[device] = state._replace(peak_used=state.used)
    return list(found.values())


def _state(
    paths: tuple[str, ...], point: str, fstype: str, device: int, stats: os.statvfs_result, *, peak: float
) -> FsState:
    return FsState(
        paths,
        point,
        fstype,
        device,
        stats.f_blocks * stats.f_frsize,
        stats.f_bavail * stats.f_frsize,
        stats.f_files,
        stats.f_favail,
        peak,
    )


def refresh(state: FsState) -> FsState:
    """``state`` read again (one statvfs), its peak kept; unchanged if it cannot be read now."""
    try:
        stats = os.statvfs(os.path.realpath(state.paths[0]))
    except OSError:
        return state
    fresh = _state(state.paths, state.mount, state.fstype, state.device, stats, peak=state.peak_used)
    return fresh._replace(peak_used=max(state.peak_used, fresh.used))


def crossed(before: float, after: float) -> float | None:
    """The highest warning level crossed going from ``before`` to ``after`` (None: none)."""
    passed = [level for level in LEVELS if before < level <= after]
    return passed[-1] if passed else None


def enospc(tail: bytes) -> bool:
    """Whether the job's last lines say a write failed for want of space."""
    return _ENOSPC.search(tail) is not None


def write_failed(tail: bytes) -> bool:
    """Whether the job's last lines report a failed write that does not name its errno."""
    return _WRITE_FAILED.search(tail) is not None


def bus_error(tail: bytes) -> bool:
    """Whether the job's last lines report a bus error (a DataLoader worker's, a shell's)."""
    return _BUS.search(tail) is not None


def fullest(states: Sequence[FsState], *, shm: bool | None = None) -> FsState | None:
    """The filesystem that was fullest (by its peak); ``shm``: only /dev/shm, or all but it."""
    pool = [s for s in states if shm is None or (SHM in s.paths) == shm]
    return max(pool, key=lambda s: s.peak_used, default=None)


def room(states: Sequence[FsState], full: FsState) -> FsState | None:
    """The job's filesystem with the most bytes free, on another device (not /dev/shm, which is
    memory), if it has more room than the full one."""
    others = [s for s in states if s.device != full.device and SHM not in s.paths and s.free > full.free]
    return max(others, key=lambda s: s.free, default=None)


def largest_files(state: FsState, limit: int = WALK_ENTRIES) -> tuple[tuple[str, int], ...]:
    """The largest files under the job's paths on ``state``'s device: a walk that never leaves
    the device and stops after ``limit`` entries."""
    sizes: list[tuple[int, str]] = []
    seen = 0
    roots = [p for p in state.paths if p != "/"] or [state.mount]
    stack = [os.path.realpath(p) for p in roots]
    while stack and seen < limit:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_dev != state.device:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                sizes.append((info.st_blocks * 512, entry.path))
    sizes.sort(reverse=True)
    return tuple((path, used) for used, path in sizes[:TOP_FILES] if used > 0)


def full_filesystem(states: Sequence[FsState], *, shm: bool | None = None) -> FullFs | None:
    """The full filesystem to name after an ENOSPC (``shm``: /dev/shm after a bus error)."""
    full = fullest(states, shm=shm)
    if full is None:
        return None
    return FullFs(full, largest_files(full), room(states, full))
