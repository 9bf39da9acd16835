"""smsupervise-pipe-emulate's arguments: channel names follow the API's rule (ChannelName:
``[A-Za-z0-9\\.\\-_]+``, at most 64 characters), so no name writes outside ``--data-dir``; a
``--data-dir`` that cannot be a directory is a clear error, not a traceback; a name in the data dir
that is not a FIFO of ours (a planted symlink, a regular file) is never written through."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsupervise.pipemode.emulate import CHANNEL_NAME, StreamOptions, parse, stream_channel
from tests.conftest import sleep_until

EMULATE = [sys.executable, "-m", "smsupervise.pipemode.emulate"]
VALID = st.from_regex(r"[A-Za-z0-9.\-_]{1,64}", fullmatch=True)


def _emulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EMULATE, *args], capture_output=True, text=True, timeout=60, check=False)


def _bad_name(name: str) -> bool:
    return CHANNEL_NAME.fullmatch(name) is None


@pytest.mark.parametrize(
    "name", ["../esc", "a/../../esc", "/abs", "a/b", "..\n", "x" * 65, "sp ace", "tr\u00e4in", "a\nb", "b\n"]
)
def test_an_unsafe_channel_name_is_refused_and_nothing_is_written(tmp_path: Path, name: str) -> None:
    """``--channel ../esc=DATA`` and every other name outside the rule: exit 2 naming the rule, and
    nothing is created anywhere (not in the data dir, not beside it)."""
    data = tmp_path / "data"
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    result = _emulate("--data-dir", str(data), "--channel", f"{name}={source}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "[A-Za-z0-9" in result.stderr
    assert "64" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.bin"]


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=0, max_size=80))
def test_any_name_outside_the_rule_is_refused_by_parse(name: str) -> None:
    """The class: any text that is not 1-64 of ``[A-Za-z0-9.-_]`` is a usage error (exit 2)."""
    if not _bad_name(name) or "=" in name:
        return
    with pytest.raises(SystemExit) as raised:
        parse(["--data-dir", "/nonexistent", f"--channel={name}=/dev/null"])
    assert raised.value.code == 2


@settings(max_examples=200)
@given(name=VALID)
def test_every_name_the_api_allows_is_accepted(name: str) -> None:
    """The negative twin: names of the API's rule (``.``, ``..`` and 64 characters included: the
    FIFO is ``<name>_<N>``, a plain file name in the data dir) pass."""
    args = parse(["--data-dir", "/nonexistent", f"--channel={name}=/dev/null"])
    assert args.channels == [(name, "/dev/null")]


@pytest.mark.parametrize("name", ["..", ".", "a.b-c_1", "x" * 64])
def test_a_valid_name_streams_into_the_data_dir(tmp_path: Path, name: str) -> None:
    """The negative twin, whole: the FIFO ``<data dir>/<name>_0`` carries the data."""
    data = tmp_path / "data"
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    process = subprocess.Popen([*EMULATE, "--data-dir", str(data), "--channel", f"{name}={source}"])
    fifo = data / f"{name}_0"
    try:
        sleep_until(lambda: os.path.lexists(fifo) or process.poll() is not None, what="the FIFO")
        assert stat.S_ISFIFO(fifo.lstat().st_mode)
        assert fifo.read_bytes() == b"payload"
        assert process.wait(30) == 0
    finally:
        process.kill()
        process.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "source.bin"]


@pytest.mark.parametrize("shape", ["file", "under-a-file", "dangling-link-dir"])
def test_a_data_dir_that_cannot_be_a_directory_is_a_clear_error(tmp_path: Path, shape: str) -> None:
    """``--data-dir FILE`` (or a path under a file): exit 2, the path and the fix, no traceback."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    data = {"file": afile, "under-a-file": afile / "sub", "dangling-link-dir": tmp_path / "link" / "d"}[shape]
    if shape == "dangling-link-dir":
        (tmp_path / "link").symlink_to(afile)
    result = _emulate("--data-dir", str(data), "--channel", f"train={afile}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "--data-dir" in result.stderr
    assert str(data) in result.stderr
    assert afile.read_text() == "x"


def test_a_planted_link_at_a_fifo_name_is_never_written_through(tmp_path: Path) -> None:
    """A symlink (or a regular file) already at ``<channel>_0``: the channel fails naming it; the
    link's target is untouched (the emulator often runs as root for smsupervise-local)."""
    data = tmp_path / "data"
    data.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (data / "train_0").symlink_to(victim)
    (data / "eval_0").write_text("not a fifo")
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    for channel in ("train", "eval"):
        with pytest.raises(OSError, match=f"{channel}_0"):
            stream_channel(str(data), channel, str(source), StreamOptions(1))
    assert victim.read_text() == "precious"
    assert (data / "eval_0").read_text() == "not a fifo"
