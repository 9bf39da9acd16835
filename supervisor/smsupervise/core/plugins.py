"""What the layers above plug into the supervisor for a run: services that live on its loop (the
control socket) and a distributed job's hooks around the launcher. Interfaces only: the
implementations are debug/ and distributed/'s, which core must not import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from smsupervise.core.status import ExitStatus
from smsupervise.settings import Settings
from smsupervise.streams.framing import RankTags, SeqCounter
from smsupervise.streams.writer import Output


class Service(Protocol):
    """Something that runs on the supervisor's loop for the whole run (the control socket)."""

    def start(self) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class Reporting(Protocol):
    """A service with something to show in ``smsupervise-debug status`` (the diagnosis sampler)."""

    def snapshot(self) -> dict[str, Any]: ...


class ClusterHooks(Protocol):
    """What a distributed job adds around the launcher (``distributed.coordinator``)."""

    async def before_main(self, request_stop: Callable[[str], None]) -> None:
        """Before the launcher starts: wait for the peers, join the mesh."""

    def launcher_started(
        self, pid: int, outputs: dict[int, Output], counter: SeqCounter, settings: Settings
    ) -> None:
        """The launcher runs: start reading the ranks' log files."""

    async def launcher_exited(self, status: ExitStatus, stderr_tail: bytes, stopping: bool) -> None:
        """The launcher is gone (its output drained): read the ranks' files to their end, and tell
        the other hosts at once when it failed on its own."""

    def record_tags(self) -> RankTags | None:
        """MPI: how to read the rank from mpirun's tagged output lines; None otherwise."""

    def ranks(self) -> list[int] | None:
        """The launcher's rank processes, which get a stop signal before it; None: no such launcher."""

    def stop_begun(self) -> None:
        """A stop of the launcher began: the ranks' exits from now on are its doing."""
