"""Worker deaths, where the server says so: gunicorn's and TorchServe/MMS's own lines about their
workers, read from the output smsupervise relays (a follower of ``streams.recent``), turned into
``worker_died`` events with the worker's pid and the cause the server gives (gunicorn's "Perhaps out
of memory?" on a SIGKILL is kept as ``oom_suspected``).

Cheap on the relay's path: a chunk is looked at only when it holds one of the servers' words
(``orker``, ``ORKER``, ``Load model failed``); a fault here is contained (logged once, the watch stops).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from smsupervise.streams.events import EventLog

MARKERS = (b"orker", b"ORKER", b"Load model failed")
PARTIAL_LIMIT = 16 << 10  # the longest partial line kept between chunks


class Pattern(NamedTuple):
    """One server's line about a worker that died."""

    server: str
    regex: re.Pattern[bytes]
    cause: str


PATTERNS = (
    Pattern("gunicorn", re.compile(rb"WORKER TIMEOUT \(pid:(?P<pid>\d+)\)"), "timeout"),
    Pattern(
        "gunicorn",
        re.compile(
            rb"Worker \(pid:(?P<pid>\d+)\) was sent (?P<signal>SIG[A-Z0-9]+)!"
            rb"(?P<oom> Perhaps out of memory\?)?"
        ),
        "killed",
    ),
    Pattern(
        "gunicorn", re.compile(rb"Worker \(pid:(?P<pid>\d+)\) exited with code:? ?(?P<code>\d+)"), "exited"
    ),
    Pattern("torchserve", re.compile(rb"Backend worker process died"), "died"),
    Pattern("torchserve", re.compile(rb"Load model failed"), "load_failed"),
)


class WorkerDeath(NamedTuple):
    """A worker's death as its server reported it."""

    server: str
    cause: str
    pid: int | None
    signal: str | None
    code: int | None
    oom_suspected: bool
    line: str


def deaths(line: bytes) -> list[WorkerDeath]:
    """The worker deaths one output line reports (usually none)."""
    if not any(marker in line for marker in MARKERS):
        return []
    found = []
    for pattern in PATTERNS:
        match = pattern.regex.search(line)
        if match is None:
            continue
        groups = match.groupdict()
        found.append(
            WorkerDeath(
                pattern.server,
                pattern.cause,
                int(groups["pid"]) if groups.get("pid") else None,
                groups["signal"].decode() if groups.get("signal") else None,
                int(groups["code"]) if groups.get("code") else None,
                bool(groups.get("oom")),
                line[:500].decode("utf-8", "replace"),
            )
        )
    return found


class WorkerWatch:
    """Follows the relayed output (``Recent.followers``) and logs ``worker_died``."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.partial = {"stdout": b"", "stderr": b""}
        self.died = 0
        self.broken = False

    def follow(self, stream: str, data: bytes) -> None:
        if self.broken:
            return
        try:
            self._follow(stream, data)
        except Exception as error:
            self.broken = True
            self.log.error(
                "serve_front_error",
                where="worker watch",
                error=repr(error),
                impact="worker deaths are no longer reported",
            )

    def _follow(self, stream: str, data: bytes) -> None:
        held = self.partial.get(stream, b"")
        if not held and not any(marker in data for marker in MARKERS) and data.endswith(b"\n"):
            return  # the common case: nothing of interest, no partial line
        text = held + data
        lines = text.split(b"\n")
        self.partial[stream] = lines.pop()[-PARTIAL_LIMIT:]
        for line in lines:
            for death in deaths(line):
                self.died += 1
                fields: dict[str, object] = {"server": death.server, "cause": death.cause, "pid": death.pid}
                if death.signal is not None:
                    fields["signal"] = death.signal
                if death.code is not None:
                    fields["exit_code"] = death.code
                if death.oom_suspected:
                    fields["oom_suspected"] = True
                self.log.warning("worker_died", **fields, line=death.line)
