"""Python stacks of every Python process of a job, with the best method each process allows.

1. **faulthandler** (no capability needed): a process that opted in (``smsupervise.checkpoint
   .enable_stacks()``, called by ``checkpoint.register()``) keeps ``<SMSUPERVISE_STACKS_DIR>/<pid>``
   open and dumps every thread's stack into it on ``SMSUPERVISE_STACKS_SIGNAL`` (SIGURG by default,
   whose default action is to do nothing). We only signal processes that have that file open.
2. **py-spy dump** (needs ptrace: root with the default Docker seccomp profile on kernels >= 4.8,
   or CAP_SYS_PTRACE; under Yama ptrace_scope=1 only an ancestor or a declared ptracer may attach).

Runs in the client (``smsupervise-debug``), never in the supervisor: it uses ``subprocess``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import NamedTuple

from smsupervise.debug import tree

DEFAULT_SIGNAL = "SIGURG"
SETTLE = 0.2  # a dump is complete when the file has not grown for this long
DUMP_TIMEOUT = 5.0


class Stack(NamedTuple):
    """One process's stacks, how they were taken, or why not."""

    pid: int
    argv: tuple[str, ...]
    method: str  # "faulthandler", "py-spy", or "" when none worked
    text: str
    problem: str = ""


def is_python(pid: int) -> bool:
    """Whether the process runs a Python interpreter (its executable is python*)."""
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")).startswith("python")
    except OSError:
        return False


def opted_in_file(pid: int, directory: str) -> str | None:
    """The stacks file ``pid`` holds open under ``directory``, if it opted in."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if os.path.dirname(target) == os.path.realpath(directory):
            return target
    return None


def _wait_for_growth(path: str, size: int) -> str:
    """The text appended to ``path`` past ``size`` once it stops growing (or after the timeout)."""
    deadline = time.monotonic() + DUMP_TIMEOUT
    last, stable_since = size, time.monotonic()
    while time.monotonic() < deadline:
        now = os.path.getsize(path)
        if now != last:
            last, stable_since = now, time.monotonic()
        elif now > size and time.monotonic() - stable_since >= SETTLE:
            break
        time.sleep(0.02)
    with open(path, "rb") as file:
        file.seek(size)
        return file.read().decode(errors="replace")


def by_faulthandler(pid: int, path: str, signum: int) -> str:
    """Ask an opted-in process to dump its stacks into ``path``; returns the dump."""
    size = os.path.getsize(path)
    os.kill(pid, signum)
    return _wait_for_growth(path, size)


def by_pyspy(pid: int) -> tuple[str, str]:
    """(stacks, problem) from ``py-spy dump``; the problem names what is missing."""
    program = shutil.which("py-spy")
    if program is None:
        return "", "py-spy is not installed (pip install py-spy) and the process did not opt in"
    try:
        done = subprocess.run(
            [program, "dump", "--pid", str(pid)], capture_output=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return "", "py-spy dump did not finish in 30 s"
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        return "", "py-spy: " + (why[-1] if why else f"exit {done.returncode}") + (
            " (py-spy needs ptrace: run as root, add CAP_SYS_PTRACE, or opt in to faulthandler stacks)"
        )
    return done.stdout.decode(errors="replace"), ""


def collect(root: int, env: Mapping[str, str], include_root: bool = True) -> list[Stack]:
    """Stacks of every Python process in the tree at ``root`` (the root too unless it is the
    supervisor), best method first."""
    directory = env.get("SMSUPERVISE_STACKS_DIR", "")
    signum = signal.Signals[env.get("SMSUPERVISE_STACKS_SIGNAL", DEFAULT_SIGNAL)]
    found = []
    for proc in tree.snapshot(root):
        if proc.zombie or not is_python(proc.pid) or (proc.pid == root and not include_root):
            continue
        path = opted_in_file(proc.pid, directory) if directory else None
        if path is not None:
            found.append(Stack(proc.pid, proc.argv, "faulthandler", by_faulthandler(proc.pid, path, signum)))
            continue
        text, problem = by_pyspy(proc.pid)
        found.append(Stack(proc.pid, proc.argv, "py-spy" if text else "", text, problem))
    return found
