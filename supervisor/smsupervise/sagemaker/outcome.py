"""The outcome files SageMaker reads (``<base>/output/success`` and ``<base>/output/failure``),
and the one place where what happened is put into words.

SageMaker shows the first 1024 characters of the failure file as the job's FailureReason, so the
text puts the most useful first: what happened, the exception line of a Python traceback from the
stderr tail, then that tail. A failure file the program wrote itself wins (toolkit#111). Both files
are written atomically (a temporary file renamed into place): a full disk leaves no empty failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import stat
from typing import NamedTuple

from smsupervise.core.spawn import StepKind
from smsupervise.core.status import ExitStatus, signal_name
from smsupervise.core.stopfacts import (
    MAX_RUNTIME_REASON,
    CheckpointHow,
    CheckpointResult,
    KillCause,
    StopReport,
)
from smsupervise.core.supervise import Outcome
from smsupervise.diagnose.facts import Diagnosis, FsState, FullFs, OomKill, size

LIMIT = 1024
# The exception line: a (dotted) class name alone or followed by ": message", not indented
# (``Exception: boom``, ``StopIteration``, ``torch.cuda.OutOfMemoryError: ...``).
_EXCEPTION = r"^[A-Za-z_][\w.]*(?::\s.*|:)?$"  # compiled at use: a failure's tail only
# What a launcher puts before each line of a worker: torch's ``[rank3]: ``, torchrun --tee's
# ``[default0]:``, mpirun --tag-output's ``[1,0]<stderr>:``, horovodrun's ``[0]<stderr>:``,
# srun --label's ``0: ``.
_LAUNCHER_PREFIX = r"^(?:\[[^\]\s]{1,40}\](?:<std(?:out|err)>)?|\d{1,5}):[ \t]?"
# A launcher's own traceback that only says a worker failed (torchrun's): a worker's exception,
# when one is in the tail, says more.
_LAUNCHER_FAILURES = ("torch.distributed.elastic.multiprocessing.errors.ChildFailedError",)
_TRACEBACK = "Traceback (most recent call last)"
HINTS = {
    int(signal.SIGKILL): "often the out-of-memory killer: check the instance's memory, or the job was "
    "SIGKILLed at the end of a stop",
    int(signal.SIGSEGV): "a crash in native code (a C extension, CUDA, a driver)",
    int(signal.SIGABRT): "an abort in native code (often a failed assertion in a C/C++ library)",
    int(signal.SIGBUS): "a bus error: often /dev/shm too small for DataLoader workers (fewer workers, a "
    "smaller prefetch_factor or batch; SageMaker does not let a job set --shm-size)",
    int(signal.SIGTERM): "it was asked to stop",
}


def _split(line: str) -> tuple[str, str]:
    """(the launcher's prefix or "", the worker's own line)."""
    found = re.match(_LAUNCHER_PREFIX, line)
    return (found.group(0), line[found.end() :]) if found else ("", line)


def _raised(lines: list[tuple[str, str]], start: int) -> str | None:
    """The exception line of the traceback that begins at ``start``: the first line after it, from
    the same writer (prefix), that is an unindented exception name."""
    prefix = lines[start][0]
    for other, body in lines[start + 1 :]:
        if other == prefix and body and not body[0].isspace() and re.match(_EXCEPTION, body):
            return body.strip()
    return None


def exception_line(tail: str) -> str | None:
    """The exception line of the traceback that failed the job, if ``tail`` holds one.

    One writer (no launcher prefix): its last traceback's. Several (a launcher's workers, each line
    prefixed ``[rank1]: `` or the like): the last traceback of the worker whose first traceback came
    first (the root cause; the others often fail because of it), given with that worker's prefix. A
    launcher's own "a worker failed" traceback counts only when nothing else is there."""
    lines = [_split(line) for line in tail.splitlines()]
    raised = []  # (writer, exception line), in order
    for i, (prefix, body) in enumerate(lines):
        if body.startswith(_TRACEBACK) and (line := _raised(lines, i)) is not None:
            raised.append((prefix, f"{prefix}{line}".strip()))
    useful = [item for item in raised if not item[1].startswith(_LAUNCHER_FAILURES)] or raised
    if not useful:
        return None
    first_writer = useful[0][0]
    return [line for writer, line in useful if writer == first_writer][-1]


def describe(status: ExitStatus, what: str = "Training") -> str:
    if status.signal is not None:
        hint = HINTS.get(status.signal)
        name = signal_name(status.signal)
        text = f"{what} was killed by {name} (signal {status.signal}, exit {status.shell_code()})"
        return f"{text}: {hint}" if hint else text
    return f"{what} exited with code {status.code}"


def duration(seconds: float) -> str:
    """3h12m, 4m05s, 12.3 s."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f} s"


def describe_checkpoint(result: CheckpointResult) -> str:
    """E.g. "checkpoint hook finished in 4.2 s (exit 0)"."""
    how, seconds = result.how, result.seconds
    if how is CheckpointHow.HOOK_EXITED and result.hook_status is not None:
        text = f"checkpoint hook finished in {seconds:.1f} s ({_status_words(result.hook_status)})"
    elif how is CheckpointHow.ACKNOWLEDGED:
        text = f"checkpoint acknowledged after {seconds:.1f} s"
    elif how is CheckpointHow.CHILD_EXITED:
        text = f"training exited {seconds:.1f} s into the checkpoint step"
    elif how is CheckpointHow.SECOND_SIGNAL:
        text = f"checkpoint step cut short after {seconds:.1f} s by a second stop signal"
    elif how is CheckpointHow.HOOK_NOT_STARTED:
        text = f"checkpoint hook could not start: {result.hook_error}"
    else:
        text = f"checkpoint not done within --checkpoint-timeout {result.timeout:g} s"
    if result.hook_error is not None and how is not CheckpointHow.HOOK_NOT_STARTED:
        text += f" (the checkpoint hook could not start: {result.hook_error})"
    if result.hook_finished_after is not None and result.hook_status is not None:
        words = _status_words(result.hook_status)
        text += (
            f"; checkpoint hook finished {result.hook_finished_after:.1f} s after the stop request ({words})"
        )
    return text


def _status_words(status: ExitStatus) -> str:
    if status.signal is not None:
        return f"killed by {signal_name(status.signal)}"
    return f"exit {status.code}"


def describe_stop(stop: StopReport, status: ExitStatus | None, what: str) -> str:
    """E.g. "Stopped by SIGTERM after 3h12m; checkpoint hook finished in 4.2 s (exit 0); training
    exited on SIGTERM after 1.1 s"."""
    if stop.reason == MAX_RUNTIME_REASON:
        limit = stop.max_runtime or 0
        parts = [f"Stopped: {stop.reason} (--max-runtime {limit:g} s) after {duration(stop.after)}"]
    else:
        parts = [f"Stopped by {stop.reason} after {duration(stop.after)}"]
    if stop.checkpoint is not None:
        parts.append(describe_checkpoint(stop.checkpoint))
    lower = what[:1].lower() + what[1:]
    if status is None:
        parts.append(f"{lower} had not started")
    else:
        how = f"on {signal_name(status.signal)}" if status.signal is not None else f"with code {status.code}"
        killed = status.signal == signal.SIGKILL
        if killed and stop.killed is KillCause.GRACE_EXPIRED:
            parts.append(
                f"{lower} did not exit within the {stop.grace:g} s grace period and was SIGKILLed "
                f"(exit {status.shell_code()})"
            )
        elif killed and stop.killed is KillCause.SECOND_SIGNAL:
            parts.append(
                f"{lower} was SIGKILLed on a second stop signal before its {stop.grace:g} s grace period "
                f"ended (exit {status.shell_code()})"
            )
        elif stop.exit_after_term is not None:
            parts.append(f"{lower} exited {how} after {stop.exit_after_term:.1f} s")
        else:
            parts.append(f"{lower} exited {how} before it was sent the stop signal")
    return "; ".join(parts)


def headline(outcome: Outcome) -> str:
    """What happened, in one line: the failure file's first line and the ``exiting`` event's ``stop``."""
    label = outcome.step.label
    what = label[:1].upper() + label[1:]
    if outcome.stop is not None:
        text = describe_stop(outcome.stop, outcome.status, what)
    elif outcome.status is None:
        text = f"{what} did not start"
    else:
        text = describe(outcome.status, what=what)
    if outcome.step.kind is StepKind.PREPARE and outcome.status is not None:
        text += "; training did not start"
    for failed in outcome.relay_failures:
        text += (
            f"; the Pipe relay of channel {failed.channel!r} failed in epoch {failed.epoch}: {failed.error}"
        )
    return text


def finished(outcome: Outcome) -> bool:
    """The main step ran to a clean end, nothing stopped it and no Pipe channel's relay failed
    (the job then read an early EOF, not its data): the run earns ``success``."""
    ok = outcome.status is not None and outcome.status.ok
    return ok and outcome.step.kind is StepKind.MAIN and outcome.stop is None and not outcome.relay_failures


def compose(headline: str, stderr_tail: bytes) -> str:
    """Headline, exception line, then as much of the stderr tail as fits in 1024 characters."""
    tail = stderr_tail.decode("utf-8", "replace").strip()
    parts = [headline.rstrip(".") + "."]
    exception = exception_line(tail)
    if exception:
        parts.append(exception)
    text = "\n".join(parts)
    room = LIMIT - len(text) - len("\nLast stderr:\n")
    if tail and room > 40:
        text += "\nLast stderr:\n" + tail[-room:]
    return text[:LIMIT]


def clear_stale(output_dir: str) -> list[str]:
    """Before anything runs: remove outcome files left by an earlier run in the same tree (local
    runs reuse a base dir; SageMaker never does), so that a failure file present at the end was
    written by this run's program. Returns what was removed."""
    removed: list[str] = []
    if not os.path.lexists(output_dir):
        return removed
    dir_fd = _open_output_dir(output_dir)
    try:
        for name in ("failure", "success", "failure_class"):
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            removed.append(os.path.join(output_dir, name))
    finally:
        os.close(dir_fd)
    return removed


class FailureWritten(NamedTuple):
    """What became of the failure file: written by us, kept (the program's own), or in the way."""

    written: bool
    problem: str | None = None  # e.g. the path is a directory


def write_failure(output_dir: str, text: str) -> FailureWritten:
    """Write the failure file atomically unless the program wrote one (a regular file; a link
    there is no file of the program's: it is replaced, never followed)."""
    path = os.path.join(output_dir, "failure")
    try:
        dir_fd = _open_output_dir(output_dir)
    except NotADirectoryError as error:
        return FailureWritten(False, str(error))
    try:
        try:
            found = os.stat("failure", dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            found = None
        if found is not None and stat.S_ISDIR(found.st_mode):
            return FailureWritten(
                False, f"{path} is a directory, not a file: remove it so the reason can be written"
            )
        if found is not None and not stat.S_ISLNK(found.st_mode):
            return FailureWritten(False)
        _write_atomically(dir_fd, "failure", text[:LIMIT], replace=found is not None)
    finally:
        os.close(dir_fd)
    return FailureWritten(True)


def write_failure_class(output_dir: str, failure_class: str) -> None:
    """``<output>/failure_class``: the failure's class as one word (``OutOfMemory``...), beside
    the failure file, for dashboards, retries and smsupervise-local's ``diagnosis.json``."""
    dir_fd = _open_output_dir(output_dir)  # as the failure file: never through a planted link
    try:
        _write_atomically(dir_fd, "failure_class", failure_class + "\n", replace=True)
    finally:
        os.close(dir_fd)


def write_success(output_dir: str) -> None:
    """The success file, atomically (whatever is at the name is replaced, never followed)."""
    dir_fd = _open_output_dir(output_dir)
    try:
        _write_atomically(dir_fd, "success", "", replace=True)
    finally:
        os.close(dir_fd)


def _open_output_dir(output_dir: str) -> int:
    """The output dir as a descriptor, made if missing. The job may write in /opt/ml: a link there
    is followed only when it is root's (the image's), like the kernel's protected_symlinks."""
    os.makedirs(os.path.dirname(output_dir) or ".", exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(output_dir)
    found = os.lstat(output_dir)
    if stat.S_ISLNK(found.st_mode) and found.st_uid not in (0, os.geteuid()):
        raise NotADirectoryError(
            f"{output_dir} is a symbolic link owned by uid {found.st_uid}, not followed: the outcome "
            "file goes only into a real directory (or a link of root's)"
        )
    return os.open(output_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _write_atomically(dir_fd: int, name: str, text: str, *, replace: bool) -> None:
    """Write ``text`` to a new temporary file of an unpredictable name beside ``name`` (created
    with O_EXCL|O_NOFOLLOW: never an existing file, never through a link), fsync it, then move it
    into place (``link`` when an existing file must win, ``rename`` otherwise: both act on the
    name itself, never on a link's target). Nothing partial is left."""
    while True:
        temporary = f".{name}.{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temporary, flags, 0o644, dir_fd=dir_fd)
        except FileExistsError:
            continue
        break
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            with contextlib.suppress(FileExistsError):  # the program wrote its own meanwhile: it wins
                os.link(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=dir_fd)


# -- the diagnosis, in words (diagnose/: OOM kills, full filesystems, /dev/shm) -----------------
SHM_ADVICE = (
    "DataLoader workers hand batches over through /dev/shm, and a SageMaker job cannot resize it "
    "(--shm-size/--ipc=host are docker's, not the job's): use fewer workers (num_workers), a smaller "
    "prefetch_factor or batch size, or num_workers=0; torch's file_system sharing strategy uses "
    "/dev/shm too (it fixes 'too many open files', not this)"
)


def describe_process(kill: OomKill, host: str | None) -> str:
    """Which process an OOM kill hit: "rank 3 (algo-2, local rank 3, pid 812)", "a DataLoader
    worker (pid 90, python3) of rank 3 (...)", "the main process (pid 7, python3)"."""
    victim = kill.victim
    assert victim is not None
    proc = victim.proc
    where = [host] if host else []
    if proc.rank is not None and proc.rank_pid == proc.pid:
        if proc.local_rank is not None:
            where.append(f"local rank {proc.local_rank}")
        return f"rank {proc.rank} ({', '.join([*where, f'pid {proc.pid}'])})"
    if proc.rank is not None and proc.rank_pid is not None:
        of = ", ".join([*where, f"pid {proc.rank_pid}"])
        return f"a worker of rank {proc.rank} (pid {proc.pid}, {proc.comm}; its rank: {of})"
    named = ", ".join(part for part in (f"pid {proc.pid}", proc.comm, host) if part)
    if kill.main:
        return f"the main process ({named})"
    return f"a process below the main process ({named})"


def describe_oom(kill: OomKill, host: str | None = None) -> str:
    """One OOM kill in words, e.g. "rank 3 (algo-2, local rank 3, pid 812) was killed by the OOM
    killer; RSS 61.2 GiB at most 0.6 s before; memory limit 64.0 GiB; its 8 workers held 24.0 GiB"."""
    limit = f"memory limit {size(kill.limit)}" if kill.limit is not None else "no memory limit"
    if kill.limit is None and kill.available is not None:
        limit += f" (MemAvailable {size(kill.available)})"
    counted = f"counted by {kill.counter}"
    victim = kill.victim
    if victim is None:
        return f"The OOM killer killed a process of the job that the sampler did not see ({counted}); {limit}"
    parts = [f"{describe_process(kill, host)} was killed by the OOM killer"]
    if victim.seen:
        parts.append(f"RSS {size(victim.proc.rss)} at most {victim.noticed - victim.last_seen:.1f} s before")
    if victim.peak_rss:
        parts.append(f"peak RSS {size(victim.peak_rss)}")
    parts.append(limit)
    if victim.workers:
        held = size(victim.workers_rss)
        if victim.workers == 1:
            parts.append(f"its 1 child process (DataLoader worker) held {held}")
        else:
            parts.append(f"its {victim.workers} child processes (DataLoader workers) held {held}")
    if not kill.by_status:
        parts.append("(the largest process of the job gone when the counter moved)")
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + f" ({counted})"


def _fs_words(fs: FsState) -> str:
    """``/opt/ml/model (tmpfs at /opt/ml/model, 64.0 MiB)``: at most three of the job's paths on it."""
    paths = ", ".join(fs.paths[:3]) + (", ..." if len(fs.paths) > 3 else "")
    return f"{paths} ({fs.fstype} at {fs.mount}, {size(fs.size)})"


def describe_full(full: FullFs) -> str:
    """A full filesystem after ENOSPC: which, what filled it, where there is room."""
    fs = full.fs
    if fs.inodes_short:
        state = f"is out of inodes ({fs.inodes} in all)"
    else:
        state = f"was {fs.peak_used:.0%} full ({size(fs.free)} free now)"
    text = f"No space left on device: {_fs_words(fs)} {state}"
    if full.filled_by:
        text += "; largest files: " + ", ".join(f"{path} {size(used)}" for path, used in full.filled_by)
    room = full.room
    if room is not None:
        text += f"; room: {size(room.free)} free on {_fs_words(room)}"
    return text


def describe_unseen_full() -> str:
    """ENOSPC, but none of the job's filesystems was seen full."""
    return (
        "No space left on device, but none of the job's filesystems (disk_layout) was seen full: a "
        "filesystem outside them, or one that filled and emptied between two samples"
    )


def describe_shm(shm: FsState) -> str:
    """A bus error with /dev/shm as it was."""
    return f"Bus error with /dev/shm ({size(shm.size)}) {shm.peak_used:.0%} full at its peak: {SHM_ADVICE}"


def explain(outcome: Outcome, diagnosis: Diagnosis, host: str | None = None, full_at: float = 0.99) -> str:
    """``headline`` with what the diagnosis knows first: OOM kills, a full filesystem, /dev/shm."""
    text = headline(outcome)
    if diagnosis.exit_hang is not None:
        text = f"Exit hang: {diagnosis.exit_hang}; {text}"
    failed = not finished(outcome)
    if not failed:
        return text
    first = [describe_oom(kill, host) for kill in diagnosis.oom]
    if diagnosis.bus_error and diagnosis.shm is not None and diagnosis.shm.peak_used >= full_at:
        first.append(describe_shm(diagnosis.shm))
    if diagnosis.enospc:
        full = diagnosis.full
        ok = full is not None and full.fs.peak_used >= full_at
        first.append(describe_full(full) if full is not None and ok else describe_unseen_full())
    status = outcome.status
    killed = status is not None and status.signal == signal.SIGKILL and outcome.stop is None
    if killed and not diagnosis.oom and diagnosis.counter is not None:
        words = f"not by the OOM killer ({diagnosis.counter} did not move): someone sent it SIGKILL"
        text = text.replace(HINTS[int(signal.SIGKILL)], words)
    elif killed and any(kill.main for kill in diagnosis.oom):
        text = text.replace(HINTS[int(signal.SIGKILL)], "by the OOM killer (above)")
    return "\n".join([*first, text])
