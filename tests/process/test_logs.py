"""Child output through smsupervise, black-box: real pipes, real children, both streams."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import PYTHON, event_names, events, sleep_until, supervisor_argv

QUIET = ("--log-level", "warning")


def _records(stream: bytes) -> list[dict[str, Any]]:
    """Every line must be a JSON object; the child's (not ours) are returned."""
    found = []
    for line in stream.splitlines():
        record = orjson.loads(line)
        assert isinstance(record, dict), line
        if record.get("logger") != "smsupervise":
            found.append(record)
    return found


def _run(mode: str, code: str, *options: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        supervisor_argv(mode, *QUIET, *options, PYTHON, "-c", code),
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def test_stdout_and_stderr_lines_become_json_on_their_own_streams(mode: str) -> None:
    """Each line becomes one JSON object on our stream of the same name, with the schema's keys."""
    code = "import sys; print('out 1'); print('err 1', file=sys.stderr); print('out 2')"
    result = _run(mode, code)
    assert result.returncode == 0
    out, err = _records(result.stdout), _records(result.stderr)
    assert [r["msg"] for r in out] == ["out 1", "out 2"]
    assert [r["msg"] for r in err] == ["err 1"]
    record = out[0]
    assert list(record)[:4] == ["ts", "stream", "msg", "seq"]
    assert record["ts"].endswith("Z")
    assert len(record["ts"]) == 24
    assert isinstance(record["pid"], int)
    assert sorted(r["seq"] for r in out + err) == [1, 2, 3]


def test_merge_streams_puts_both_on_stdout(mode: str) -> None:
    """--merge-streams: stderr records go to our stdout, still marked stream=stderr."""
    result = _run(mode, "import sys; print('a'); print('b', file=sys.stderr)", "--merge-streams")
    assert {r["stream"] for r in _records(result.stdout)} == {"stdout", "stderr"}
    assert _records(result.stderr) == []


def test_tqdm_progress_is_throttled_with_the_final_state_kept(mode: str) -> None:
    """A tqdm-style bar (\\r states, one \\n at the end) is not one garbled blob: states go out
    one per --progress-interval, and the final state is always there."""
    code = (
        "import sys\nfor i in range(101): sys.stderr.write(f'\\r{i:3d}%|' + '#' * (i // 10)); "
        "sys.stderr.flush()\nsys.stderr.write('\\n')"
    )
    result = _run(mode, code, "--progress-interval", "60")
    err = _records(result.stderr)
    assert err[-1]["msg"].startswith("100%|")
    assert len(err) <= 4  # the first state, maybe one more, the last state, the final line
    assert any(r.get("progress") for r in err)


def test_a_five_megabyte_line_arrives_whole_in_capped_parts(mode: str) -> None:
    """A 5 MB line comes out as parts of at most --max-line-bytes that rejoin to the line."""
    result = _run(mode, "import sys; sys.stdout.write('ab' * 2_500_000 + '\\n')")
    lines = result.stdout.splitlines(keepends=True)
    assert max(len(line) for line in lines) <= 16384
    parts = _records(result.stdout)
    assert "".join(p["msg"] for p in parts) == "ab" * 2_500_000
    assert parts[-1]["partial"]["last"] is True


def test_nul_bytes_and_invalid_utf8_are_kept_visible(mode: str) -> None:
    """NUL survives as \\u0000 and invalid UTF-8 becomes U+FFFD; the line is not dropped."""
    result = _run(mode, "import sys; sys.stdout.buffer.write(b'a\\x00b\\xff\\xfec\\n')")
    assert [r["msg"] for r in _records(result.stdout)] == ["a\x00b\ufffd\ufffdc"]


def test_json_and_emf_lines_are_emitted_at_the_root(mode: str) -> None:
    """A child that prints JSON (and EMF) gets its object at the root, our keys added alongside."""
    emf = {
        "_aws": {
            "Timestamp": 1700000000000,
            "CloudWatchMetrics": [
                {
                    "Namespace": "training",
                    "Dimensions": [["job"]],
                    "Metrics": [{"Name": "loss", "Unit": "None"}],
                }
            ],
        },
        "loss": 0.42,
        "job": "mine",
    }
    code = f"import json; print(json.dumps({emf!r})); print(json.dumps({{'event': 'epoch', 'n': 3}}))"
    records = _records(_run(mode, code).stdout)
    assert records[0]["_aws"] == emf["_aws"]
    assert records[0]["loss"] == 0.42
    assert records[0]["job"] == "mine"  # the child's own key wins
    assert records[1]["event"] == "epoch"
    assert records[1]["stream"] == "stdout"


def test_a_tail_without_newline_is_flushed_after_silence(mode: str, start) -> None:
    """A prompt-like tail with no newline shows up after --flush-after, marked eol=none, while the
    child is still running."""
    run = start(
        *QUIET,
        "--flush-after",
        "0.2",
        PYTHON,
        "-c",
        "import sys, time; sys.stdout.write('waiting for input'); sys.stdout.flush(); time.sleep(30)",
    )
    assert run.proc.stdout is not None
    record = orjson.loads(run.proc.stdout.readline())
    assert record["msg"] == "waiting for input"
    assert record["eol"] == "none"
    assert run.proc.poll() is None
    run.signal(signal.SIGTERM)
    run.wait()


def test_child_that_closes_stdout_and_keeps_running(mode: str) -> None:
    """EOF on stdout is not exit: smsupervise keeps supervising, and relays stderr, until the
    child exits."""
    code = (
        "import os, sys, time; print('bye stdout', flush=True); os.close(1); time.sleep(0.5); "
        "print('still here', file=sys.stderr, flush=True); sys.exit(4)"
    )
    result = _run(mode, code)
    assert result.returncode == 4
    assert [r["msg"] for r in _records(result.stdout)] == ["bye stdout"]
    assert "still here" in [r["msg"] for r in _records(result.stderr)]


def test_grandchild_holding_the_pipe_cannot_keep_us_alive(mode: str, tmp_path: Path) -> None:
    """A grandchild that keeps stdout open after the child exits: smsupervise drains for
    --drain-timeout, says what it cut off and who held the pipe, and exits with the child's code."""
    ready = tmp_path / "ready"
    script = (
        f"(trap '' TERM; touch {ready}; exec sleep 60) & "
        f"while [ ! -e {ready} ]; do sleep 0.01; done; echo parent done; exit 3"
    )
    result = subprocess.run(
        supervisor_argv(mode, "--drain-timeout", "0.5", "--leftover-grace", "1", "sh", "-c", script),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    cut = [e for e in events(result.stderr) if e["event"] == "output_cut_off"]
    assert cut
    assert {s["stream"] for s in cut[0]["streams"]} == {"stdout", "stderr"}
    assert cut[0]["streams"][0]["held_by"]  # the grandchild's pid is named
    assert "parent done" in [r["msg"] for r in _records(result.stdout)]


def test_backpressure_blocks_the_child_and_loses_nothing(mode: str, tmp_path: Path) -> None:
    """With our stdout not being read, the child blocks (memory stays bounded) and smsupervise
    still answers signals; once read, every line arrives, in order."""
    lines = 300_000
    code = f"import sys\nfor i in range({lines}): sys.stdout.write(f'line {{i:07d}} ' + 'x' * 80 + '\\n')"
    proc = subprocess.Popen(
        supervisor_argv(mode, *QUIET, PYTHON, "-c", code), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        from tests.conftest import Supervised

        pid = Supervised.attach(mode, proc).init_pid
        # The writer is blocked on its full pipe: everything smsupervise would buffer, it holds now.
        sleep_until(lambda: _blocked_in_pipe_write(pid), timeout=60, what="the child to block on its pipe")
        rss_kb = int(
            next(
                line
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            ).split()[1]
        )
        assert rss_kb < 80 * 1024  # ~30 MB output would be in memory if nothing pushed back
        assert proc.poll() is None
        out, _err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    records = _records(out)
    assert len(records) == lines
    assert records[-1]["msg"].startswith(f"line {lines - 1:07d}")
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)


def test_a_flood_of_short_lines_arrives_whole_and_in_order(mode: str) -> None:
    """200,000 lines of a few bytes (relayed in reads of ~2048 lines): every one once, in order."""
    lines = 200_000
    result = _run(mode, f"import sys\nsys.stdout.write(''.join(f'{{i}}\\n' for i in range({lines})))")
    assert result.returncode == 0
    records = _records(result.stdout)
    assert [r["msg"] for r in records] == [str(i) for i in range(lines)]
    assert [r["seq"] for r in records] == list(range(1, lines + 1))


def test_raw_format_passes_bytes_through_untouched(mode: str) -> None:
    """--log-format raw: the child's bytes arrive exactly (MetricDefinitions regexes anchored at ^)."""
    payload = b"loss=0.5\r\n\xff\x00 no newline"
    result = _run(mode, f"import sys; sys.stdout.buffer.write({payload!r})", "--log-format", "raw")
    assert result.stdout == payload


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_relay_is_the_same_under_both_loops(mode: str, loop: str) -> None:
    """The relay does not depend on uvloop."""
    env = {**os.environ, "SMSUPERVISE_EVENT_LOOP": loop}
    result = subprocess.run(
        supervisor_argv(mode, PYTHON, "-c", "for i in range(5000): print(i)"),
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert [r["msg"] for r in _records(result.stdout)] == [str(i) for i in range(5000)]
    assert "exiting" in event_names(result.stderr)  # our events go to stderr ...
    assert event_names(result.stdout) == []  # ... and never into the child's stdout records


def _blocked_in_pipe_write(init_pid: int) -> bool:
    """Whether a descendant of the init sleeps in the kernel's pipe write (its pipe is full)."""
    from smsupervise.linux.proctree import descendants

    for pid in descendants(init_pid):
        with contextlib.suppress(OSError):
            if "pipe_write" in Path(f"/proc/{pid}/wchan").read_text():
                return True
    return False


def test_text_format_renders_our_events_for_people(mode: str) -> None:
    """--log-format text: our events are lines for people (event name, key=value), not JSON, and
    the child's bytes pass through untouched; the JSON twin renders the same event as JSON."""
    argv = ("sh", "-c", "echo plain output; exit 3")
    text = subprocess.run(
        supervisor_argv(mode, "--log-format", "text", *argv), capture_output=True, timeout=60, check=False
    )
    assert text.returncode == 3
    assert text.stdout == b"plain output\n"
    exiting = [line for line in text.stderr.decode().splitlines() if "exiting" in line]
    assert exiting
    assert "exit_code=3" in exiting[-1]
    assert not exiting[-1].lstrip().startswith("{")
    json_run = subprocess.run(supervisor_argv(mode, *argv), capture_output=True, timeout=60, check=False)
    assert next(e for e in events(json_run.stderr) if e["event"] == "exiting")["exit_code"] == 3
