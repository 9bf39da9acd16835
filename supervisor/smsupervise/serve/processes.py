"""Several processes, one service (``--also FILE``): programs that run beside the main one (``serve``
or ``train``'s program), e.g. nginx in front of gunicorn, declared in one small JSON file, so the
BYO ``serve`` script that starts both and waits for either to die is no longer needed.

Each process has its own command, stop signal and place in the stop order, and is essential by
default: when it exits (and has no restarts left) the whole run stops, with a reason naming it and
how it ended. With ``restart`` it is started again instead, after 1, 2, 4 ... (at most 30) seconds.

They are the supervisor's siblings (``core.siblings``): started with the job's environment and cwd,
reaped by its reaper, their output logged like the job's, never taken for leftovers while they run,
shown in the debug socket's ``status`` (``processes``) and ``tree``. On a stop they get their stop
signals in the file's order, each awaited up to ``--grace-period`` (then SIGKILL), before the main
program gets its own.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from smsupervise import parsers
from smsupervise.core.status import ExitStatus, signal_name
from smsupervise.errors import SpawnError, UsageError
from smsupervise.streams.events import EventLog

if TYPE_CHECKING:
    from smsupervise.core.plugins import JobControl
    from smsupervise.core.siblings import Sibling

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
FIELDS = {"name", "command", "stop_signal", "restart", "essential"}


class ProcessSpec(NamedTuple):
    """One declared process."""

    name: str
    argv: tuple[str, ...]
    stop_signal: int
    restart: int  # how many times it is started again before its exit counts
    essential: bool  # its exit (for good) stops the run


def load(path: str) -> tuple[ProcessSpec, ...]:
    """Read ``--also FILE``: a JSON list of ``{"name", "command", "stop_signal", "restart",
    "essential"}``. Raises ``UsageError`` naming the file, the entry, the field and the fix."""
    try:
        with open(path, "rb") as file:
            data = orjson.loads(file.read())
    except OSError as error:
        raise UsageError(
            f"--also {path}: cannot be read ({error.strerror}); name a readable JSON file"
        ) from None
    except orjson.JSONDecodeError as error:
        raise UsageError(
            f"--also {path}: not JSON ({error}); write a list of processes, see docs/serve.md"
        ) from None
    if not isinstance(data, list) or not data:
        raise UsageError(f"--also {path}: must hold a non-empty JSON list of processes, see docs/serve.md")
    specs = [_entry(path, index, entry) for index, entry in enumerate(data)]
    names = [spec.name for spec in specs]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"--also {path}: the name {name!r} is used twice; give each process its own")
    return tuple(specs)


def _entry(path: str, index: int, entry: object) -> ProcessSpec:
    where = f"--also {path}: entry {index}"
    if not isinstance(entry, dict):
        raise UsageError(f'{where} is not an object; write {{"name": ..., "command": ...}}')
    unknown = set(entry) - FIELDS
    if unknown:
        raise UsageError(
            f"{where}: unknown field {sorted(unknown)[0]!r}; the fields are {', '.join(sorted(FIELDS))}"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsageError(f"{where}: \"name\" must be 1-64 letters, digits, '_', '.', '-', e.g. \"nginx\"")
    where = f"--also {path}: {name}"
    command = entry.get("command")
    if isinstance(command, str):
        argv = tuple(shlex.split(command))
    elif isinstance(command, list) and all(isinstance(word, str) for word in command):
        argv = tuple(command)
    else:
        raise UsageError(f'{where}: "command" must be a command line or a list of words')
    if not argv:
        raise UsageError(f'{where}: "command" is empty; give the program to run')
    stop = entry.get("stop_signal", "TERM")
    if not isinstance(stop, str | int) or isinstance(stop, bool):
        raise UsageError(f'{where}: "stop_signal" must be a signal name such as "QUIT"')
    stop_signal = parsers.signal_number(str(stop), f'{where}: "stop_signal"')
    restart = entry.get("restart", 0)
    if not isinstance(restart, int) or isinstance(restart, bool) or restart < 0:
        raise UsageError(f'{where}: "restart" must be a whole number >= 0 (how many restarts)')
    essential = entry.get("essential", True)
    if not isinstance(essential, bool):
        raise UsageError(f'{where}: "essential" must be true or false')
    return ProcessSpec(name, argv, stop_signal, restart, essential)


class Running:
    """One declared process as it runs."""

    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self.sibling: Sibling | None = None
        self.restarts = 0
        self.last: ExitStatus | None = None
        self.started = 0.0
        self.pending: asyncio.TimerHandle | None = None  # a restart waiting for its backoff

    @property
    def running(self) -> bool:
        return self.sibling is not None and not self.sibling.exit.done()


class Processes:
    """The declared processes of a run: a Service on the supervisor's loop, and a stop step."""

    def __init__(self, specs: tuple[ProcessSpec, ...], supervisor: JobControl, log: EventLog) -> None:
        self.processes = [Running(spec) for spec in specs]
        self.supervisor = supervisor
        self.log = log
        self.stopping = False
        self.failure: tuple[str, ExitStatus] | None = None  # the essential process that ended the run

    # -- the Service protocol ------------------------------------------------------------------
    def start(self) -> None:
        for process in self.processes:
            self._spawn(process)

    def close(self) -> None:
        """The run is over: whatever still runs is killed (the leftovers' rule)."""
        self.stopping = True
        for process in self.processes:
            if process.pending is not None:
                process.pending.cancel()
            if process.running and process.sibling is not None:
                process.sibling.child.send(signal.SIGKILL)

    def status_fields(self) -> dict[str, object]:
        """For the debug socket's ``status``."""
        return {
            "processes": [
                {
                    "name": p.spec.name,
                    "pid": p.sibling.child.pid if p.sibling is not None else None,
                    "running": p.running,
                    "argv": list(p.spec.argv),
                    "stop_signal": signal_name(p.spec.stop_signal),
                    "essential": p.spec.essential,
                    "restarts": p.restarts,
                    "last_exit": p.last.describe() if p.last is not None else None,
                }
                for p in self.processes
            ]
        }

    # -- running -------------------------------------------------------------------------------
    def _spawn(self, process: Running) -> None:
        process.pending = None
        if self.stopping:
            return
        try:
            sibling = self.supervisor.spawn_sibling(process.spec.argv, {}, capture=False)
        except SpawnError as error:
            self.log.error("process_not_started", name=process.spec.name, error=error.message())
            self._ended(process, ExitStatus(code=int(error.exit_code)))
            return
        process.sibling = sibling
        process.started = time.monotonic()
        self.log.info(
            "process_started", name=process.spec.name, pid=sibling.child.pid, argv=list(process.spec.argv)
        )
        sibling.exit.add_done_callback(lambda done: self._exited(process, done))

    def _exited(self, process: Running, done: asyncio.Future[ExitStatus]) -> None:
        if done.cancelled():
            return
        status = done.result()
        process.last = status
        fields: Mapping[str, object] = {
            "name": process.spec.name,
            "pid": process.sibling.child.pid if process.sibling is not None else None,
            "exit_code": status.shell_code(),
            "ran_s": round(time.monotonic() - process.started, 3),
        }
        if self.stopping:
            self.log.info("process_exited", **fields)
            return
        self.log.warning("process_exited", **fields, essential=process.spec.essential)
        self._ended(process, status)

    def _ended(self, process: Running, status: ExitStatus) -> None:
        """An exit that was not asked for: restart with backoff while allowed, else stop the run
        (essential) or let it be."""
        spec = process.spec
        if process.restarts < spec.restart:
            delay = min(BACKOFF_FIRST * 2**process.restarts, BACKOFF_MAX)
            process.restarts += 1
            self.log.warning(
                "process_restarting", name=spec.name, attempt=process.restarts, of=spec.restart, after_s=delay
            )
            process.pending = asyncio.get_running_loop().call_later(delay, self._spawn, process)
            return
        if not spec.essential or self.failure is not None:
            return
        self.failure = (spec.name, status)
        self.supervisor.request_stop(f"{spec.name} exited ({status.describe()})")

    # -- the stop ------------------------------------------------------------------------------
    async def drain(self, advance: asyncio.Event) -> None:
        """Each process gets its stop signal in the file's order and is awaited, all of them within
        one grace period (then SIGKILL); a second SIGTERM moves on at once."""
        self.stopping = True
        deadline = time.monotonic() + self.supervisor.settings.grace_period
        for process in self.processes:
            if process.pending is not None:
                process.pending.cancel()
            sibling = process.sibling
            if sibling is None or sibling.exit.done():
                continue
            sibling.child.send(process.spec.stop_signal)
            self.log.info(
                "process_stopping", name=process.spec.name, signal=signal_name(process.spec.stop_signal)
            )
            second: asyncio.Future[bool] = asyncio.ensure_future(advance.wait())
            waits: list[asyncio.Future[Any]] = [second, asyncio.shield(sibling.exit)]
            try:
                await asyncio.wait(
                    waits,
                    timeout=max(0.0, deadline - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                second.cancel()
            if not sibling.exit.done():
                sibling.child.send(signal.SIGKILL)
                self.log.warning("process_killed", name=process.spec.name, reason="grace period over")
            advance.clear()
