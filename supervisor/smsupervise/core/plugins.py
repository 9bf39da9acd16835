"""What the layers above plug into the supervisor for a run, and what they may ask of it. Interfaces
only: the implementations are debug/'s and distributed/'s (and the next wings': a stall watchdog, a
serve front), which core must not import.

- ``Service``: something that lives on the supervisor's loop for the whole run (the control socket, the
  serve front, the declared processes). A wing hands the supervisor a ``ServiceFactory``; the supervisor
  makes the service with itself as the ``JobControl`` the service may use, starts it with the run and
  closes it at the end. A service may also ``Drains`` (work before the main child's stop signal) and
  ``Reports`` (its part of ``status``).
- ``JobControl``: the small face of the running supervisor that services see (never the class).
- ``ClusterHooks``: what a distributed job adds around the launcher; ``NO_CLUSTER`` is the single-host
  null object, so the supervisor has no ``if cluster`` branches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from smsupervise.core.snapshot import RunState
from smsupervise.core.status import ExitStatus
from smsupervise.settings import Settings
from smsupervise.streams.events import EventLog
from smsupervise.streams.framing import RankTags, SeqCounter
from smsupervise.streams.recent import Recent
from smsupervise.streams.writer import Output

if TYPE_CHECKING:
    from smsupervise.core.siblings import Sibling


class Service(Protocol):
    """Something that runs on the supervisor's loop for the whole run (the control socket)."""

    def start(self) -> None: ...
    def close(self) -> None: ...


class JobControl(Protocol):
    """What a service may read of the run and do to it (the debug socket's verbs)."""

    @property
    def log(self) -> EventLog: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def recent(self) -> Recent: ...
    def state(self) -> RunState:
        """The run as typed data."""

    def stopping(self) -> bool:
        """Whether a stop has begun (or was asked for before the job started)."""

    def job_running(self) -> bool:
        """Whether the current step's process is alive."""

    def leftover_pids(self) -> list[int]:
        """After the main process exited: what is still alive below us."""

    def signal_job(self, signum: int) -> bool:
        """Forward a signal as if it had reached smsupervise; False: no child."""

    def spawn_sibling(self, argv: tuple[str, ...], extra_env: Mapping[str, str], capture: bool) -> Sibling:
        """Start a process beside the job, with its environment and cwd."""

    def checkpointing(self, hook: Sibling) -> None:
        """``hook`` (a sibling) is the checkpoint hook run on demand: a stop meanwhile adopts it."""

    def release(self) -> bool:
        """End a keep-alive after failure now; False when there is none."""

    def request_stop(self, reason: str) -> None:
        """Stop the run as SIGTERM would, for ``reason`` (an essential process ended, an exit hang)."""

    def main_pid(self) -> int | None:
        """The current step's process, once started."""

    def sibling_pids(self) -> set[int]:
        """The processes started beside the job that still run (not the job's own)."""


ServiceFactory = Callable[[JobControl], Service]


# What runs between a stop request and the main child's stop signal (serve/'s front drains its
# connections; --also's processes stop in their order); it is handed the event a second SIGTERM/SIGINT
# sets, and returns when the child may be signalled. The stop budget counts it (settings).
Drain = Callable[[asyncio.Event], Awaitable[None]]


@runtime_checkable
class Drains(Protocol):
    """A service that has work to do before the main child gets its stop signal (the serve front's
    drain, the declared processes' ordered stop): the supervisor runs every such service's ``drain``
    in the order the services were given."""

    async def drain(self, advance: asyncio.Event) -> None: ...


@runtime_checkable
class Reports(Protocol):
    """A service with something to show in the debug socket's ``status`` (merged into it)."""

    def status_fields(self) -> Mapping[str, object]: ...


class ClusterHooks(Protocol):
    """What a distributed job adds around the launcher (``distributed.coordinator``)."""

    async def before_main(self, request_stop: Callable[[str], None]) -> None:
        """Before the launcher starts: wait for the peers, join the mesh."""

    def launcher_started(
        self, pid: int, outputs: dict[int, Output], counter: SeqCounter, settings: Settings
    ) -> None:
        """The launcher runs: start reading the ranks' log files."""

    async def launcher_exited(
        self, status: ExitStatus, drained_tail: Callable[[], Awaitable[bytes]], stopping: bool
    ) -> None:
        """The launcher is gone: read the ranks' files to their end, and tell the other hosts at once
        when it failed on its own (``drained_tail`` drains its output and gives its stderr's end)."""

    def record_tags(self) -> RankTags | None:
        """MPI: how to read the rank from mpirun's tagged output lines; None otherwise."""

    def ranks(self) -> list[int] | None:
        """The launcher's rank processes, which get a stop signal before it; None: no such launcher."""

    def stop_begun(self) -> None:
        """A stop of the launcher began: the ranks' exits from now on are its doing."""


class NoCluster:
    """A single-host job: every hook does nothing (the null object for ``ClusterHooks``)."""

    async def before_main(self, request_stop: Callable[[str], None]) -> None:
        return None

    def launcher_started(
        self, pid: int, outputs: dict[int, Output], counter: SeqCounter, settings: Settings
    ) -> None:
        return None

    async def launcher_exited(
        self, status: ExitStatus, drained_tail: Callable[[], Awaitable[bytes]], stopping: bool
    ) -> None:
        return None  # nobody to tell: the output is drained with the leftovers' end, as always

    def record_tags(self) -> RankTags | None:
        return None

    def ranks(self) -> list[int] | None:
        return None

    def stop_begun(self) -> None:
        return None


NO_CLUSTER: ClusterHooks = NoCluster()
