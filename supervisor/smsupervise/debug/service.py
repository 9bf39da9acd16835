"""What the control socket serves for a running Supervisor: the handler table, and its set-up.

Every handler runs on the supervisor's loop and hands off at once: status is a snapshot of plain
fields, logs read the ring the relay already fills, acting requests go through the Supervisor
(so its events record them) and through core/spawn (the only process creator) and the reaper.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from smsupervise.core.hook import hook_argv, hook_env
from smsupervise.core.plugins import Reporting
from smsupervise.core.status import signal_name
from smsupervise.debug.control import (
    ControlServer,
    Handler,
    HandlerError,
    Peer,
    Policy,
)
from smsupervise.debug.tree import leftover
from smsupervise.errors import SpawnError

if TYPE_CHECKING:
    from smsupervise.core.supervise import Supervisor

PAUSE_AT = 16  # captured chunks queued for a slow client before we stop reading the sibling
LAST_LINES = 5


class DebugService:
    """The control server bound to one Supervisor; a ``Service`` of the Supervisor."""

    def __init__(self, sock: Any, supervisor: Supervisor, mode: str, group: int | None) -> None:
        self.supervisor = supervisor
        self.mode = mode
        self.log = supervisor.log
        self.server = ControlServer(sock, Policy(os.getuid(), group), self._handlers())
        self._checkpointing = False

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.close()

    def _handlers(self) -> dict[str, Handler]:
        return {
            "status": Handler(answer=self.status),
            "logs": Handler(stream=self.logs),
            "signal": Handler(answer=self.signal),
            "checkpoint": Handler(answer=self.checkpoint),
            "release": Handler(answer=self.release),
            "exec": Handler(stream=self.exec),
        }

    # -- reading -------------------------------------------------------------------------------
    def status(self, args: Mapping[str, Any], peer: Peer) -> Any:
        snapshot = self.supervisor.snapshot()
        recent = self.supervisor.recent
        lines = recent.tail("stdout", LAST_LINES) + recent.tail("stderr", LAST_LINES)
        reports = [s.snapshot() for s in self.supervisor.services if isinstance(s, Reporting)]
        return {
            **snapshot,
            **{key: value for report in reports for key, value in report.items()},
            "mode": self.mode,
            "control_socket": self.server.path,
            "last_lines": [_record("", line) for line in lines],
            "leftovers": [row for row in map(leftover, self.supervisor.leftover_pids()) if row is not None],
        }

    async def logs(self, args: Mapping[str, Any], peer: Peer) -> AsyncIterator[Any]:
        """The last records held, then (``follow``) every new one, filtered by stream and rank."""
        streams = [args["stream"]] if args.get("stream") in ("stdout", "stderr") else ["stdout", "stderr"]
        rank = args.get("rank")
        recent = self.supervisor.recent
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        def follow(stream: str, data: bytes) -> None:
            if stream in streams:
                queue.put_nowait((stream, data))

        # The backlog and the follower are taken in one step: no record falls between them.
        backlog = [
            (stream, line) for stream in streams for line in recent.tail(stream, int(args.get("lines") or 50))
        ]
        if args.get("follow"):
            recent.followers.append(follow)
        try:
            for stream, line in backlog:
                record = _record(stream, line)
                if _matches(record, rank):
                    yield record
            while args.get("follow"):
                stream, data = await queue.get()
                for line in data.splitlines():
                    record = _record(stream, line)
                    if line and _matches(record, rank):
                        yield record
        finally:
            if follow in recent.followers:
                recent.followers.remove(follow)

    # -- acting --------------------------------------------------------------------------------
    def signal(self, args: Mapping[str, Any], peer: Peer) -> Any:
        signum = _parse_signal(str(args.get("signal", "")))
        self.log.info(
            "debug_request", op="signal", signal=signal_name(signum), peer_uid=peer.uid, peer_pid=peer.pid
        )
        if not self.supervisor.signal_job(signum):
            raise HandlerError("the job is not running: there is nobody to signal")
        return {"message": f"sent {signal_name(signum)} to the job (see the signal_forwarded event)"}

    def release(self, args: Mapping[str, Any], peer: Peer) -> Any:
        if not self.supervisor.release():
            raise HandlerError("nothing to release: smsupervise is not being kept alive after a failure")
        self.log.info("debug_request", op="release", peer_uid=peer.uid, peer_pid=peer.pid)
        return {"message": "released: smsupervise ends the leftovers and exits"}

    async def checkpoint(self, args: Mapping[str, Any], peer: Peer) -> Any:
        """Run the checkpoint hook now, beside the running job, and wait for it."""
        settings = self.supervisor.settings
        if settings.checkpoint_hook is None:
            raise HandlerError(
                "no checkpoint hook is configured: start smsupervise with --checkpoint-hook CMD "
                "(--checkpoint-signal alone means 'save and stop' to the job, so it is not sent on demand)"
            )
        if self.supervisor.stop is not None or not self.supervisor.job_running():
            raise HandlerError("the job is not running (or is stopping): no checkpoint now")
        if self._checkpointing:
            raise HandlerError("a checkpoint requested earlier is still running")
        self._checkpointing = True
        try:
            return await self._run_hook(settings.checkpoint_hook, settings.checkpoint_timeout, peer)
        finally:
            self._checkpointing = False

    async def _run_hook(self, hook: str, timeout: float, peer: Peer) -> Any:
        deadline = time.time() + timeout
        try:
            sibling = self.supervisor.spawn_sibling(
                hook_argv(hook), hook_env("CheckpointRequested", deadline), capture=False
            )
        except SpawnError as error:
            raise HandlerError(f"checkpoint hook could not start: {error.message()}") from None
        started = time.monotonic()
        self.log.info(
            "checkpoint_hook_started",
            pid=sibling.child.pid,
            argv=list(sibling.child.argv),
            deadline=round(deadline, 3),
            requested_by=peer.uid,
        )
        try:
            status = await asyncio.wait_for(asyncio.shield(sibling.exit), timeout)
        except asyncio.TimeoutError:
            sibling.child.send(signal.SIGKILL)
            self.log.warning(
                "checkpoint_hook_killed", pid=sibling.child.pid, why="timeout", checkpoint_timeout=timeout
            )
            raise HandlerError(
                f"the checkpoint hook did not finish within {timeout:g} s and was killed"
            ) from None
        seconds = round(time.monotonic() - started, 3)
        self.log.info(
            "checkpoint_done",
            how="hook exited",
            seconds=seconds,
            hook_exit_code=status.shell_code(),
            requested=True,
        )
        return {
            "message": f"checkpoint hook finished in {seconds:.1f} s (exit {status.shell_code()}); "
            "training goes on",
            "seconds": seconds,
            "exit_code": status.shell_code(),
        }

    async def exec(self, args: Mapping[str, Any], peer: Peer) -> AsyncIterator[Any]:
        """Run a command with the job's environment and cwd; stream its output, then its exit code."""
        argv = tuple(str(word) for word in args.get("argv") or ())
        if not argv:
            raise HandlerError("exec needs a command")
        try:
            sibling = self.supervisor.spawn_sibling(argv, {}, capture=True)
        except SpawnError as error:
            raise HandlerError(error.message()) from None
        self.log.info("debug_request", op="exec", argv=list(argv), pid=sibling.child.pid, peer_uid=peer.uid)
        assert sibling.stdout is not None
        assert sibling.stderr is not None
        try:
            async for item in _read_pipes({"stdout": sibling.stdout, "stderr": sibling.stderr}):
                yield item
            status = await sibling.exit
            yield {"exit_code": status.shell_code()}
        finally:
            if not sibling.exit.done():  # the client went away: the command goes too
                sibling.child.send(signal.SIGKILL)


def _parse_signal(text: str) -> int:
    name = text.strip().upper()
    if name.isdigit() and int(name) in signal.valid_signals():
        return int(name)
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        raise HandlerError(f"{text!r} is not a signal name; use e.g. USR1 or SIGHUP") from None


def _record(stream: str, line: bytes) -> dict[str, Any]:
    """A JSON record as it was written, or a raw line wrapped as one."""
    if line.startswith(b"{"):
        with contextlib.suppress(orjson.JSONDecodeError):
            record = orjson.loads(line)
            if isinstance(record, dict):
                record.setdefault("stream", stream)
                return record
    return {"stream": stream, "msg": line.decode(errors="replace")}


def _matches(record: Mapping[str, Any], rank: object) -> bool:
    """``--rank N``: a record with that ``rank`` field, or a line prefixed ``[rankN]``/``[defaultN]``
    (torchrun's --tee / --log-line-prefix-template)."""
    if rank is None:
        return True
    if str(record.get("rank")) == str(rank):
        return True
    message = str(record.get("msg", ""))
    return message.startswith((f"[rank{rank}]", f"[default{rank}]"))


async def _read_pipes(fds: dict[str, int]) -> AsyncIterator[dict[str, Any]]:
    """Chunks from several pipes as they come, until all are at EOF; closes them."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    live = set(fds)
    paused: set[str] = set()

    def readable(name: str) -> None:
        try:
            data = os.read(fds[name], 65536)
        except (BlockingIOError, InterruptedError):
            return
        if not data or queue.qsize() >= PAUSE_AT:
            loop.remove_reader(fds[name])
            (live.discard if not data else paused.add)(name)
        queue.put_nowait((name, data))

    for name, fd in fds.items():
        os.set_blocking(fd, False)
        loop.add_reader(fd, readable, name)
    try:
        while live or not queue.empty():
            name, data = await queue.get()
            if data:
                yield {"stream": name, "data": data.decode(errors="replace")}
            if paused and queue.qsize() < PAUSE_AT // 4:
                for again in paused:
                    loop.add_reader(fds[again], readable, again)
                paused.clear()
    finally:
        for name in live:
            loop.remove_reader(fds[name])
        for fd in fds.values():
            os.close(fd)
