"""The outcome files SageMaker reads: ``<base>/output/success`` and ``<base>/output/failure``.

SageMaker shows the first 1024 characters of the failure file as the job's FailureReason, so the
text puts the most useful first: what happened, the exception line of a Python traceback from the
stderr tail, then that tail. A failure file the program wrote itself wins (toolkit#111).
"""

from __future__ import annotations

import os
import re
import signal

from smsupervise.status import ExitStatus, signal_name

LIMIT = 1024
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Fault|Warning|Failure)"
                        r"|[A-Za-z_][\w.]*\.[A-Z]\w*)(?::\s.*)?$")
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
    for line in lines[starts[-1] + 1:]:
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


def clear_stale(output_dir: str, run_started: float) -> list[str]:
    """Remove outcome files older than ``run_started`` (epoch seconds): left over from an earlier run
    in the same tree (local runs reuse a base dir; SageMaker never does). Returns what was removed."""
    removed = []
    for name in ("failure", "success"):
        path = os.path.join(output_dir, name)
        try:
            if os.stat(path).st_mtime < run_started:
                os.unlink(path)
                removed.append(path)
        except FileNotFoundError:
            pass
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
