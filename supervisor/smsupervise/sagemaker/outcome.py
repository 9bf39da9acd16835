"""The outcome files SageMaker reads: ``<base>/output/success`` and ``<base>/output/failure``.

SageMaker shows the first 1024 characters of the failure file as the job's FailureReason, so the
text puts the most useful first: what happened, the exception line of a Python traceback from the
stderr tail, then that tail. A failure file the program wrote itself wins (toolkit#111).
"""

from __future__ import annotations

import os
import re
import signal

from smsupervise.core.status import ExitStatus, signal_name
from smsupervise.core.stop import MAX_RUNTIME_REASON, StopReport

LIMIT = 1024
_EXCEPTION = re.compile(
    r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Fault|Warning|Failure)"
    r"|[A-Za-z_][\w.]*\.[A-Z]\w*)(?::\s.*)?$"
)
HINTS = {
    int(signal.SIGKILL): "often the out-of-memory killer: check the instance's memory, or the job was "
    "SIGKILLed at the end of a stop",
    int(signal.SIGSEGV): "a crash in native code (a C extension, CUDA, a driver)",
    int(signal.SIGABRT): "an abort in native code (often a failed assertion in a C/C++ library)",
    int(signal.SIGBUS): "a bus error: often /dev/shm too small for DataLoader workers (raise --shm-size)",
    int(signal.SIGTERM): "it was asked to stop",
}


def exception_line(tail: str) -> str | None:
    """The exception line of the last Python traceback in ``tail``, if there is one."""
    lines = tail.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return None
    for line in lines[starts[-1] + 1 :]:
        if line and not line[0].isspace() and _EXCEPTION.match(line):
            return line.strip()
    return None


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


def describe_stop(
    stop: StopReport, status: ExitStatus | None, what: str, grace: float, max_runtime: float | None
) -> str:
    """E.g. "Stopped by SIGTERM after 3h12m; checkpoint hook finished in 4.2 s (exit 0); training
    exited on SIGTERM after 1.1 s"."""
    if stop.reason == MAX_RUNTIME_REASON:
        parts = [
            f"Stopped: {stop.reason} (--max-runtime {max_runtime or 0:g} s) after {duration(stop.after)}"
        ]
    else:
        parts = [f"Stopped by {stop.reason} after {duration(stop.after)}"]
    if stop.checkpoint:
        parts.append(stop.checkpoint)
    lower = what[:1].lower() + what[1:]
    if status is None:
        parts.append(f"{lower} had not started")
    else:
        how = f"on {signal_name(status.signal)}" if status.signal is not None else f"with code {status.code}"
        if stop.killed_after_grace and status.signal == signal.SIGKILL:
            parts.append(
                f"{lower} did not exit within the {grace:g} s grace period and was SIGKILLed "
                f"(exit {status.shell_code()})"
            )
        elif stop.exit_after_term is not None:
            parts.append(f"{lower} exited {how} after {stop.exit_after_term:.1f} s")
        else:
            parts.append(f"{lower} exited {how} before it was sent the stop signal")
    return "; ".join(parts)


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
    removed = []
    for name in ("failure", "success"):
        path = os.path.join(output_dir, name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def write_failure(output_dir: str, text: str) -> bool:
    """Write the failure file unless the program wrote one; True if we wrote it."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "failure")
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text[:LIMIT])
    except FileExistsError:
        return False
    return True


def write_success(output_dir: str) -> None:
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "success"), "w", encoding="utf-8"):
        pass
