"""Human renderings of the debug views (``smsupervise-debug`` without ``--json``). Pure text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _size(value: object) -> str:
    number = float(value) if isinstance(value, int | float) else 0.0
    for unit in ("B", "K", "M", "G"):
        if number < 1024 or unit == "G":
            return f"{number:.0f}{unit}" if unit == "B" else f"{number:.1f}{unit}"
        number /= 1024
    return ""


def tree(rows: Sequence[Mapping[str, Any]]) -> str:
    """``ps xf``-like: one line per process, indented below its parent; warnings flagged."""
    lines = [f"{'PID':>7} {'PGID':>7} S {'CPU%':>6} {'RSS':>7} {'THR':>3} {'RANK':>4}  WAITS ON / COMMAND"]
    for row in rows:
        cpu = row.get("cpu_percent")
        rank = row.get("rank") or ""
        if row.get("local_rank") is not None:
            rank = f"{rank}/{row['local_rank']}"
        command = " ".join(row.get("argv") or []) or f"[{row.get('comm')}]"
        waits = row.get("waits_on") or row.get("wchan") or ""
        branch = "  " * int(row.get("depth", 0)) + ("\\_ " if row.get("depth") else "")
        lines.append(
            f"{row['pid']:>7} {row['pgid']:>7} {row['state']} {'' if cpu is None else cpu:>6} "
            f"{_size(row.get('rss')):>7} {row.get('threads', ''):>3} {rank:>4}  "
            f"{branch}{command}"
            + (f"  <{waits}>" if waits else "")
            + (" <defunct>" if row.get("zombie") else "")
        )
        if row.get("warning"):
            lines.append(f"{'':>7} ! pid {row['pid']} {row['warning']}")
    return "\n".join(lines)


def status(result: Mapping[str, Any]) -> str:
    """The status record as a few labelled lines."""
    sup = result.get("supervisor", {})
    child = result.get("child") or {}
    lines = [
        f"smsupervise pid {sup.get('pid')} up {sup.get('uptime_s')} s, mode {result.get('mode')}, "
        f"step {result.get('step')!s}",
        f"child: pid {child.get('pid')} pgid {child.get('pgid')}: {' '.join(child.get('argv') or [])}"
        if child
        else "child: none",
    ]
    if result.get("host") or result.get("job"):
        lines.append(f"host {result.get('host')}, job {result.get('job')}")
    stop = result.get("stop")
    lines.append(
        "stop: not requested"
        if not stop
        else f"stop: {stop.get('reason')}, phase {stop.get('phase')}, {stop.get('seconds_left')} s left "
        f"in this phase, {stop.get('budget_left')} s left in the budget"
    )
    if result.get("keep_alive"):
        lines.append(f"keep-alive after failure: {result['keep_alive'].get('seconds_left')} s left")
    for name, counts in (result.get("streams") or {}).items():
        lines.append(
            f"{name}: {counts.get('records')} records, {_size(counts.get('bytes'))}; "
            f"dropped {counts.get('dropped_records', 0)} records, {_size(counts.get('dropped_bytes', 0))}"
        )
    for channel in result.get("pipes") or []:
        lines.append(pipe_channel(channel))
    leftovers = result.get("leftovers") or []
    if leftovers:
        lines.append(f"leftovers: {len(leftovers)} processes still alive after the job's main process exited")
        lines.extend(
            f"  pid {row['pid']} pgid {row['pgid']} {row['state']}: {' '.join(row['argv'])}"
            for row in leftovers
        )
    elif result.get("running") is False:
        lines.append("leftovers: none")
    lines.extend(diagnosis(result))
    for record in result.get("last_lines") or []:
        lines.append(f"  | {log(record)}")
    return "\n".join(lines)


def diagnosis(result: Mapping[str, Any]) -> list[str]:
    """The diagnosis sampler's last view (memory, filesystems) and the failure class, if any."""
    lines = []
    memory = result.get("memory")
    if memory:
        limit = _size(memory["limit"]) if memory.get("limit") is not None else "no limit"
        usage = _size(memory["usage"]) if memory.get("usage") is not None else "?"
        psi = memory.get("psi_full_avg10")
        lines.append(
            f"memory: {usage} of {limit} ({memory.get('cgroup') or 'no memory cgroup'}); job RSS "
            f"{_size(memory.get('job_rss'))}; PSI full avg10 {psi if psi is not None else '-'}; "
            f"OOM kills {memory.get('oom_kills')} ({memory.get('oom_counter')})"
        )
        for proc in memory.get("processes") or []:
            rank = f" rank {proc['rank']}" if proc.get("rank") is not None else ""
            lines.append(f"  pid {proc['pid']}{rank}: RSS {_size(proc['rss'])} {proc['comm']}")
    for fs in result.get("filesystems") or []:
        lines.append(
            f"filesystem {fs['mount']} ({fs['fstype']}): {_size(fs['free'])} free of {_size(fs['size'])}, "
            f"{fs['used']:.0%} used, {fs['inodes_free']} inodes free; {', '.join(fs['paths'])}"
        )
    sampler = result.get("sampler")
    if sampler:
        lines.append(
            f"sampler: every {sampler.get('interval')} s, {sampler.get('samples')} samples, "
            f"{sampler.get('mean_ms')} ms each"
        )
    if result.get("failure_class"):
        lines.append(f"failure class: {result['failure_class']}")
    return lines


def pipe_channel(channel: Mapping[str, Any]) -> str:
    """One Pipe channel of ``status``: epoch, bytes, MB/s over the last second, and what it waits on."""
    if "state" not in channel:
        return f"pipe {channel.get('channel')}: not relayed (the job reads the platform's FIFOs)"
    ring = f", {_size(channel['ring_held'])} read ahead" if channel.get("ring_held") else ""
    return (
        f"pipe {channel['channel']} epoch {channel['epoch']}: {_size(channel['bytes'])} "
        f"({_size(channel['epoch_bytes'])} this epoch), {channel['mb_per_s']} MB/s, "
        f"{channel['state']}{ring}"
    )


def attach(result: Mapping[str, Any]) -> str:
    """``--pid N status``: zombies, warnings, inputs, then the tree."""
    zombies = result["zombies"]
    lines = [f"pid {result['pid']}: {result['processes']} processes, {zombies['count']} zombies"]
    for parent, count in zombies["by_parent"].items():
        lines.append(f"  {count} zombies under pid {parent}: it does not reap them (wait())")
    for warning in result["warnings"]:
        lines.append(f"  ! pid {warning['pid']} {warning['warning']}")
    for item in result["inputs"]:
        kind = "FIFO" if item["fifo"] else "file"
        lines.append(f"  pid {item['pid']} reads {kind} {item['path']}: {item['mb_per_s']} MB/s")
    return "\n".join(lines) + "\n" + tree(result["tree"])


def log(record: Mapping[str, Any]) -> str:
    """One relayed record as ``stream pid: msg``."""
    return f"{record.get('stream', '?')} {record.get('pid', '')}: {record.get('msg', record)}"


def acted(command: str, result: Any) -> str:
    """What an acting command did."""
    if isinstance(result, Mapping) and result.get("message"):
        return str(result["message"])
    return f"{command}: done"


def stacks(data: Sequence[Mapping[str, Any]]) -> str:
    """Each process's stacks under a header naming how they were taken."""
    if not data:
        return "no Python process found in the job"
    parts = []
    for item in data:
        head = f"=== pid {item['pid']}: {' '.join(item['argv'])}"
        if item["method"]:
            parts.append(f"{head} (by {item['method']})\n{item['text'].rstrip()}")
        else:
            parts.append(f"{head}\nno stacks: {item['problem']}")
    return "\n".join(parts)


def inspected(result: Mapping[str, Any]) -> str:
    """``inspect``: each step's argv and cwd, the variables smsupervise sets, the stop arithmetic."""
    lines = [f"mode {result['mode']}"]
    if result.get("pending"):
        lines.append(result["pending"])
    for step in result["steps"]:
        lines.append(f"step {step['label']} ({step['kind']}): {' '.join(step['argv'])}")
        lines.append(f"  cwd {step['cwd']}")
        for key, item in step["env"].items():
            if item["source"] != "inherited":
                lines.append(f"  {key}={item['value']}  [{item['source']}]")
    lines.append(f"channels: {', '.join(result['channels']) or 'none'}")
    lines.append(f"stop: {result['stop']['check']}")
    return "\n".join(lines)
