"""The relay's FIFOs on a real kernel: the relay dir check, removing only ours, EOF for a failed channel."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from smsupervise.errors import UsageError
from smsupervise.pipemode.fifos import RelayFifos, check_relay_dir
from tests.conftest import sleep_until


def _opener(path: Path, got: dict[str, bytes]) -> threading.Thread:
    """A reader thread like a trainer's: open the path, read it to EOF."""

    def run() -> None:
        with open(path, "rb") as handle:
            got["data"] = handle.read()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wchan(thread: threading.Thread) -> str:
    return Path(f"/proc/self/task/{thread.native_id}/wchan").read_text()


def test_give_eof_releases_a_reader_blocked_in_open_and_one_that_comes_later(tmp_path: Path) -> None:
    """A reader already waiting in open() gets EOF, and so does one that opens afterwards."""
    fifos = RelayFifos(str(tmp_path))
    path = tmp_path / "train_0"
    fifos.make(str(path))
    early: dict[str, bytes] = {}
    waiting = _opener(path, early)
    sleep_until(lambda: _wchan(waiting) == "wait_for_partner", what="the reader to wait in open()")
    fifos.give_eof(str(path))
    waiting.join(10)
    assert early == {"data": b""}
    late: dict[str, bytes] = {}
    _opener(path, late).join(10)
    assert late == {"data": b""}


def test_without_give_eof_the_reader_stays_in_open(tmp_path: Path) -> None:
    """The negative twin: a FIFO nobody writes to keeps its reader in open() (today's hang)."""
    fifos = RelayFifos(str(tmp_path))
    path = tmp_path / "train_0"
    fifos.make(str(path))
    got: dict[str, bytes] = {}
    waiting = _opener(path, got)
    sleep_until(lambda: _wchan(waiting) == "wait_for_partner", what="the reader to wait in open()")
    assert waiting.is_alive()
    assert got == {}
    os.close(os.open(path, os.O_WRONLY))  # release it for the test's end
    waiting.join(10)


def test_only_entries_the_relay_created_are_removed(tmp_path: Path) -> None:
    """A FIFO we made goes; a file put in its place by someone else stays."""
    fifos = RelayFifos(str(tmp_path))
    ours, replaced = tmp_path / "train_0", tmp_path / "train_1"
    fifos.make(str(ours))
    fifos.make(str(replaced))
    replaced.unlink()
    replaced.write_text("someone else's")
    fifos.remove_all()
    assert not ours.exists()
    assert replaced.read_text() == "someone else's"


def test_the_platform_data_dir_is_refused_as_the_relay_dir(tmp_path: Path) -> None:
    """The data dir itself, or a symlink to it, is refused with the option and the fix."""
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    for relay_dir in (data, tmp_path / "link"):
        with pytest.raises(UsageError, match="platform's Pipe-mode data dir") as caught:
            check_relay_dir(str(relay_dir), str(data), ("train",))
        assert caught.value.exit_code == 2
        assert "--pipe-relay-dir" in caught.value.message()


def test_a_dir_holding_channel_entries_is_refused_and_others_are_fine(tmp_path: Path) -> None:
    """``train_3`` (a file or a FIFO) makes the dir unusable; ``train_x``, ``other_0`` do not."""
    relay_dir = tmp_path / "relay"
    relay_dir.mkdir()
    (relay_dir / "train_x").write_text("notes")
    (relay_dir / "other_0").write_text("another channel's name")
    check_relay_dir(str(relay_dir), str(tmp_path / "data"), ("train",))
    (relay_dir / "train_3").write_text("mine")
    with pytest.raises(UsageError, match="train_3, a file that is not ours"):
        check_relay_dir(str(relay_dir), str(tmp_path / "data"), ("train",))
    (relay_dir / "train_3").unlink()
    os.mkfifo(relay_dir / "train_3")
    with pytest.raises(UsageError, match="train_3, a FIFO"):
        check_relay_dir(str(relay_dir), str(tmp_path / "data"), ("train",))
