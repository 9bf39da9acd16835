"""The pure parts of OOM attribution and the readers' parsers, over whole classes of inputs:
which departed process an OOM-kill counter's move belongs to, /proc/<pid>/stat with any command
name, PSI lines, mountinfo with escaped spaces."""

from __future__ import annotations

import signal
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from smsupervise.core.status import ExitStatus
from smsupervise.diagnose.facts import Departure, ProcView
from smsupervise.diagnose.memory import PressureGate, victims
from smsupervise.linux import cgroups, procstat

STATUSES = st.one_of(
    st.none(),
    st.builds(ExitStatus, code=st.integers(0, 255)),
    st.builds(ExitStatus, signal=st.sampled_from([signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])),
)


@st.composite
def departures(draw: st.DrawFn) -> list[Departure]:
    count = draw(st.integers(0, 6))
    found = []
    for pid in range(100, 100 + count):
        peak = draw(st.integers(0, 1 << 36))
        view = ProcView(pid, 1, peak, "python", 1, None, None, None, 0.0, peak)
        found.append(Departure(view, 0.0, 1.0, draw(STATUSES), 0, 0))
    return found


@given(st.integers(1, 3), departures())
def test_a_kill_is_never_pinned_on_a_process_that_died_of_something_else(
    kills: int, gone: list[Departure]
) -> None:
    """Whatever departed: one OomKill per counted kill; never a victim whose death we saw with
    another cause; a seen SIGKILL death is preferred to an unseen one, and among equals the largest."""
    found = victims(kills, gone, counter="c", limit=None, usage=None, available=None, main_pid=None)
    assert len(found) == kills
    picked = [k.victim for k in found if k.victim is not None]
    assert len({d.proc.pid for d in picked}) == len(picked)
    for departure in picked:
        assert departure.status is None or departure.status.signal == signal.SIGKILL
    eligible = [d for d in gone if d.status is None or d.status.signal == signal.SIGKILL]
    assert len(picked) == min(kills, len(eligible))
    killed = [d for d in eligible if d.status is not None]
    if killed:
        best = max(d.proc.peak for d in killed)
        assert picked[0].status is not None
        assert picked[0].proc.peak == best


def test_no_kill_counted_names_no_victim() -> None:
    """The twin: a SIGKILL death with no counter move is not an OOM kill."""
    view = ProcView(7, 1, 1 << 30, "python", 1, None, None, None, 0.0, 1 << 30)
    gone = [Departure(view, 0.0, 1.0, ExitStatus(signal=signal.SIGKILL), 0, 0)]
    assert victims(0, gone, counter="c", limit=None, usage=None, available=None, main_pid=7) == []


@given(st.text(min_size=0, max_size=16).filter(lambda t: "\0" not in t), st.sampled_from("RSDZ"))
def test_stat_lines_parse_whatever_the_command_name(comm: str, state: str) -> None:
    """A command name may hold spaces, parentheses, newlines: the fields come after the last ')'."""
    fields = [state, "41", *["0"] * 17, "12345", "0", "25", *["0"] * 25, "777", "0", "0", "9"]
    raw = f"42 ({comm}) {' '.join(fields)}".encode()
    proc = procstat.parse_stat(42, raw)
    assert proc is not None
    assert (proc.pid, proc.ppid, proc.state, proc.started) == (42, 41, state, 12345)
    assert proc.rss == 25 * procstat.PAGE
    assert proc.env_start == 777
    assert proc.wait_status == (9 if state == "Z" else None)
    assert proc.comm == comm


def test_our_own_stat_line_parses() -> None:
    """The real thing: this process's stat, read from /proc."""
    import os

    with open(f"/proc/{os.getpid()}/stat", "rb") as stat:
        proc = procstat.parse_stat(os.getpid(), stat.read())
    assert proc is not None
    assert proc.ppid == os.getppid()
    assert proc.rss > 0
    assert proc.env_start > 0


@given(st.floats(0, 100, allow_nan=False), st.floats(0, 100, allow_nan=False))
def test_pressure_lines_parse(some: float, full: float) -> None:
    """Any avg10 values come back as written."""
    text = f"some avg10={some:.2f} avg60=0.00 avg300=0.00 total=1\nfull avg10={full:.2f} avg60=0.00 total=0\n"
    parsed = cgroups.parse_pressure(text)
    assert parsed == cgroups.Pressure(round(some, 2), round(full, 2))


def test_pressure_without_psi_is_none() -> None:
    """The twin: no file, or not PSI, is None rather than an error."""
    assert cgroups.parse_pressure(None) is None
    assert cgroups.parse_pressure("garbage") is None
    assert cgroups.parse_pressure("some avg10=x\n") is None


def test_the_pressure_gate_warns_once_per_crossing() -> None:
    """90 % warns once; it warns again only after usage fell below 80 %."""
    gate = PressureGate()
    assert gate.check(91, 100, None)
    assert not gate.check(95, 100, None)
    assert not gate.check(85, 100, None)
    assert not gate.check(92, 100, None)
    assert not gate.check(70, 100, None)
    assert gate.check(90, 100, None)
    assert not PressureGate().check(50, None, None)
    assert PressureGate().check(10, None, 25.0)


def test_mountinfo_with_an_escaped_space_finds_the_cgroup_directory() -> None:
    """A mount point with a space is written ``\\040`` in mountinfo."""
    text = (
        "30 25 0:26 / /sys/fs/cg\\040x rw - cgroup cgroup rw,memory\n"
        "31 25 0:27 / /x rw - cgroup2 cgroup2 rw\n"
    )
    mounts = cgroups._mounts(text)
    assert mounts[0] == ("/", "/sys/fs/cg x", "cgroup", {"rw", "memory"})
    assert mounts[1][2] == "cgroup2"


def test_our_memory_cgroup_is_found_when_there_is_one() -> None:
    """On this machine: the cgroup /proc/self/cgroup names, with readable counters."""
    found = cgroups.memory_cgroup()
    if found is None:
        return
    reading = cgroups.read_memory(found)
    assert reading.oom_kills is not None
    assert reading.usage is not None
    assert reading.usage > 0


def test_a_v2_cgroup_reads_its_counter_limit_and_usage(tmp_path: Path) -> None:
    """cgroup v2's files (not mounted here: the memory controller is on v1): memory.max "max" is no
    limit; the counter is memory.events' oom_kill, not oom or max."""
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text("123456\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n")
    reading = cgroups.read_memory(cgroups.MemoryCgroup(2, str(tmp_path)))
    assert reading == cgroups.MemoryReading(123456, None, 1)
    (tmp_path / "memory.max").write_text("67108864\n")
    assert cgroups.read_memory(cgroups.MemoryCgroup(2, str(tmp_path))).limit == 64 << 20


def test_a_v1_cgroup_without_a_limit_reads_as_none(tmp_path: Path) -> None:
    """v1 shows "no limit" as a huge number; an old kernel's oom_control has no oom_kill line."""
    (tmp_path / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "memory.usage_in_bytes").write_text("4096\n")
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    assert cgroups.read_memory(cgroups.MemoryCgroup(1, str(tmp_path))) == cgroups.MemoryReading(
        4096, None, None
    )


def test_the_cgroup_directory_is_found_under_its_mount(tmp_path: Path) -> None:
    """A hierarchy mounted at a point whose mount root is a sub-path (a container's view): the
    cgroup path is taken relative to that root; a path outside it is none of ours."""
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "memory.events").write_text("oom_kill 0\n")
    mounts = [("/kubepods/pod1", str(tmp_path), "cgroup2", {"rw"})]
    assert cgroups._v2(mounts, "/kubepods/pod1/job") == cgroups.MemoryCgroup(2, str(tmp_path / "job"))
    assert cgroups._v2(mounts, "/elsewhere/job") is None
    v1 = [("/", str(tmp_path), "cgroup", {"rw", "memory"})]
    assert cgroups._v1(v1, "/job") == cgroups.MemoryCgroup(1, str(tmp_path / "job"))
    assert cgroups._v1([("/", str(tmp_path), "cgroup", {"rw", "cpu"})], "/job") is None
