"""The relay's own bookkeeping in-process (``ChildOutput`` over real pipes, a real child): the
ring's per-stream record counter says how many lines were written, however the framer made them
(one record a line, a split message's parts, JSON objects, progress states, a tail at EOF), in json
and raw modes, under both event loops. The framer reports its records; nothing counts newlines."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from typing import IO

import orjson
import pytest
import uvloop

from smsupervise.settings import Settings
from smsupervise.streams.childpipes import ChildOutput
from smsupervise.streams.events import EventLog
from smsupervise.streams.recent import Recent
from smsupervise.streams.watch import ProgressWatch
from smsupervise.streams.writer import Output

CHILD = r"""
import os, sys
out = sys.stdout.buffer
out.write(b"plain line\n" * 3000)
out.write(b"INFO a level\n{\"k\": 1}\n" + b"x" * 40000 + b"\n")
out.write(b"50%\r60%\r70%\rdone\n")
out.write(b"bad \xff byte\nsay \"hi\"\n")
out.write(b"no newline at the end")
out.flush()
err = sys.stderr.buffer
err.write(b"e1\ne2\r\n")
err.flush()
"""


async def _relay(settings: Settings, watch: ProgressWatch | None = None) -> tuple[Recent, dict[str, bytes]]:
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        return await _relay_to(settings, {"stdout": stdout, "stderr": stderr}, watch)


async def _relay_to(
    settings: Settings, files: dict[str, IO[bytes]], watch: ProgressWatch | None
) -> tuple[Recent, dict[str, bytes]]:
    loop = asyncio.get_running_loop()
    outputs = {1: Output(loop, files["stdout"].fileno()), 2: Output(loop, files["stderr"].fileno())}
    recent = Recent(limit=1 << 30)
    relay = ChildOutput(settings, EventLog(fd=os.open(os.devnull, os.O_WRONLY)), outputs, recent=recent)
    relay.watch = watch
    out_fd, err_fd = relay.open()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=out_fd, stderr=err_fd)
    relay.start(child.pid, None, None)
    await asyncio.wait_for(asyncio.gather(*(s.eof.wait() for s in relay.streams)), 60)
    assert child.wait(60) == 0
    written = {}
    for name, file in files.items():
        file.seek(0)
        written[name] = file.read()
    return recent, written


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("log_format", ["json", "raw"])
def test_the_rings_record_counter_is_the_lines_written(loop: str, log_format: str) -> None:
    """Per stream, ``records`` equals the newlines in what reached our fd, and ``bytes`` its size
    (json: 3000 plain lines in bulk, a split 40 kB line, a JSON object, throttled progress, bad
    UTF-8, quotes, a tail flushed at EOF; raw: the bytes as they came)."""
    settings = Settings.defaults()._replace(log_format=log_format, progress_interval=0.0)
    run = uvloop.run if loop == "uvloop" else asyncio.run
    recent, written = run(_relay(settings))
    for name in ("stdout", "stderr"):
        assert recent.records[name] == written[name].count(b"\n"), name
        assert recent.bytes[name] == len(written[name]), name
    assert recent.records["stdout"] > 3000  # the child's lines all went through the counter


def test_the_progress_watch_sees_the_childs_lines_and_changes_no_output() -> None:
    """With a watch on (the stall watchdog's seam), a line of the child that matches is seen, and
    the records are the same as without it."""

    async def both() -> tuple[list[dict[str, object]], list[dict[str, object]], ProgressWatch]:
        settings = Settings.defaults()._replace(progress_interval=0.0)
        _, plain = await _relay(settings)
        watch = ProgressWatch(r"^no newline at the end$")
        _, watched = await _relay(settings, watch)
        return _records(plain["stdout"]), _records(watched["stdout"]), watch

    plain, watched, watch = asyncio.run(both())
    assert watch.last_match is not None
    assert watch.matches == 1
    assert watched == plain


def _records(data: bytes) -> list[dict[str, object]]:
    """The records without what differs run to run (ts, pid, seq), a split message's parts joined
    (where a long line is cut depends on how the reads fell)."""
    records: list[dict[str, object]] = []
    parts: list[str] = []
    for line in data.splitlines():
        record = {k: v for k, v in orjson.loads(line).items() if k not in ("ts", "pid", "seq")}
        partial = record.pop("partial", None)
        if isinstance(partial, dict):
            parts.append(str(record["msg"]))
            if not partial["last"]:
                continue
            record["msg"], parts = "".join(parts), []
        records.append(record)
    return records
