"""Per-rank log files (torchrun's PET_LOG_DIR layout) become records with rank, local_rank, host."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import orjson
import pytest

from smsupervise.distributed.ranklogs import RankLogs
from smsupervise.streams.framing import RecordFormat, SeqCounter
from smsupervise.streams.writer import Output


async def _run(
    root: Path, console: frozenset[int] | None, writes: dict[tuple[int, str], list[bytes]]
) -> tuple[list[dict[str, object]], list[dict[str, object]], RankLogs]:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()

    async def main() -> RankLogs:
        loop = asyncio.get_running_loop()
        outputs = {1: Output(loop, out_w), 2: Output(loop, err_w)}
        fmt = RecordFormat(pid=42, host="algo-2", job="job")
        logs = RankLogs(str(root), node_rank=1, per_host=2, fmt=fmt, outputs=outputs, counter=SeqCounter(),
                        console=console)  # fmt: skip
        logs.start()
        attempt = root / "none_abc" / "attempt_0"
        for (local, stream), chunks in writes.items():
            (attempt / str(local)).mkdir(parents=True, exist_ok=True)
            with (attempt / str(local) / f"{stream}.log").open("wb") as handle:
                for chunk in chunks:  # a line written in pieces, as a rank's buffered output may be
                    handle.write(chunk)
                    handle.flush()
                    await asyncio.sleep(0.01)
        await logs.stop()
        for output in outputs.values():
            output.finish(time.monotonic() + 5)
        return logs

    logs = await main()
    os.close(out_w)
    os.close(err_w)
    read = []
    for fd in (out_r, err_r):
        with os.fdopen(fd, "rb") as handle:
            read.append([orjson.loads(line) for line in handle.read().splitlines()])
    return read[0], read[1], logs


@pytest.mark.asyncio
async def test_records_carry_rank_local_rank_and_host_and_lines_stay_whole(tmp_path: Path) -> None:
    """Two ranks writing pieces of lines at once: every record is one whole line of one rank."""
    writes = {
        (0, "stdout"): [b"rank 2 says ", b"hello\n", b"rank 2 again\n"],
        (1, "stdout"): [b"rank 3 ", b"says hello\n"],
        (1, "stderr"): [b"Traceback (most recent call last):\n", b"ValueError: boom\n"],
    }
    out, err, logs = await _run(tmp_path, None, writes)
    assert sorted((r["rank"], r["local_rank"], r["msg"]) for r in out) == [
        (2, 0, "rank 2 again"), (2, 0, "rank 2 says hello"), (3, 1, "rank 3 says hello"),
    ]  # fmt: skip
    assert all(r["host"] == "algo-2" and r["pid"] == 42 for r in out + err)
    assert [r["msg"] for r in err] == ["Traceback (most recent call last):", "ValueError: boom"]
    assert logs.tail(3).endswith(b"ValueError: boom\n")


@pytest.mark.asyncio
async def test_ranks_limits_the_console_but_not_the_tail(tmp_path: Path) -> None:
    """--ranks 2: rank 3's lines are not shown, yet its stderr is kept for the failure reason."""
    writes = {(0, "stdout"): [b"from 2\n"], (1, "stdout"): [b"from 3\n"], (1, "stderr"): [b"ValueError: x\n"]}
    out, err, logs = await _run(tmp_path, frozenset({2}), writes)
    assert [r["msg"] for r in out] == ["from 2"]
    assert err == []
    assert logs.tail(3) == b"ValueError: x\n"
