"""Our non-blocking writer on a real pipe whose reader has stalled or gone: bounded, never blocking."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from smsupervise.streams.writer import EVENTS_CAP, Output


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_our_events_are_capped_while_the_reader_stalls(loop_name: str) -> None:
    """A storm of our own events into a pipe nobody reads: the buffer stops at the cap (plus one
    event), the rest is dropped and counted, and no write ever blocks the loop."""

    async def storm() -> Output:
        read_end, write_end = os.pipe()
        output = Output(asyncio.get_running_loop(), write_end)
        event = b'{"event":"signal_forwarded","signal":"SIGUSR1"}' + b" " * 150 + b"\n"
        for _ in range(3 * EVENTS_CAP // len(event)):
            output.write_event(event)
        assert len(output._buffer) <= EVENTS_CAP + len(event)
        output.finish(time.monotonic())  # a deadline already passed: nothing waits
        os.close(read_end)
        os.close(write_end)
        return output

    output = _run(storm(), loop_name)
    assert output.dropped_events > 0
    assert output.dropped_bytes >= output.dropped_events * 200


def test_the_childs_output_is_never_dropped_while_the_reader_only_stalls() -> None:
    """The twin: plain writes (the child's records) are buffered past the cap, not dropped: the
    child is paused by backpressure instead (the readers stop reading its pipes)."""

    async def child_output() -> Output:
        read_end, write_end = os.pipe()
        output = Output(asyncio.get_running_loop(), write_end)
        for _ in range(2 * EVENTS_CAP // 1000):
            output.write(b"x" * 999 + b"\n")
        assert output.congested
        assert output.dropped_bytes == 0
        output.finish(time.monotonic())
        os.close(read_end)
        os.close(write_end)
        return output

    output = _run(child_output(), "asyncio")
    assert output.dropped_events == 0


def test_a_reader_that_went_away_turns_writes_into_counted_drops() -> None:
    """EPIPE (SIGPIPE is ignored by smsupervise; pytest ignores it too): the writer marks itself
    broken and counts every byte it could not deliver."""

    async def broken() -> Output:
        read_end, write_end = os.pipe()
        os.close(read_end)
        output = Output(asyncio.get_running_loop(), write_end)
        output.write(b"a" * 100)
        output.write(b"b" * 50)
        os.close(write_end)
        return output

    output = _run(broken(), "asyncio")
    assert output.broken
    assert output.dropped_bytes == 150


def test_what_a_vanished_reader_cost_is_counted_per_source() -> None:
    """A reader that stalls, then goes: what was buffered and what came after are dropped, and
    counted in records and bytes against the stream each came from."""

    async def vanished() -> Output:
        read_end, write_end = os.pipe()
        output = Output(asyncio.get_running_loop(), write_end)
        out_line, err_line = b"o" * 999 + b"\n", b"e" * 499 + b"\n"
        while not output._buffer:  # fill the pipe until the rest waits in our buffer
            output.write(out_line, "stdout")
        output.write(err_line * 3, "stderr")
        output.write(out_line, "stdout")
        os.close(read_end)
        output._on_writable()  # EPIPE: what was buffered is dropped
        output.write(err_line, "stderr")  # after: dropped at once
        os.close(write_end)
        return output

    output = _run(vanished(), "asyncio")
    stdout, stderr = output.lost["stdout"], output.lost["stderr"]
    assert stderr == [4, 2000]
    assert stdout[1] % 1000 == 0  # writes below PIPE_BUF are atomic: whole lines were buffered
    assert stdout[0] == stdout[1] // 1000 >= 2
    assert output.dropped_bytes == stdout[1] + stderr[1]


def test_a_reader_that_keeps_reading_loses_nothing() -> None:
    """The twin: the same writes to a reader that drains the pipe leave ``lost`` empty."""

    async def drained() -> tuple[Output, int]:
        read_end, write_end = os.pipe()
        output = Output(asyncio.get_running_loop(), write_end)
        out_line = b"o" * 999 + b"\n"
        while not output._buffer:
            output.write(out_line, "stdout")
        output.write(b"e" * 499 + b"\n", "stderr")
        taken = 0
        while output._buffer:
            taken += len(os.read(read_end, 1 << 20))
            output._on_writable()
        taken += len(os.read(read_end, 1 << 20))
        os.close(read_end)
        os.close(write_end)
        return output, taken

    output, taken = _run(drained(), "asyncio")
    assert output.lost == {}
    assert taken % 1000 == 500  # every stdout line and the stderr one arrived


def _run(coroutine, loop_name: str):  # type: ignore[no-untyped-def]
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)
