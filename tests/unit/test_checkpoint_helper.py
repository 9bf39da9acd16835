"""smsupervise.checkpoint in this process, with real signals: the stop protocol training code uses."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from smsupervise import checkpoint


@pytest.fixture
def restore_usr1() -> Iterator[None]:
    """Put SIGUSR1's disposition back after the test."""
    previous = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, previous)


@pytest.mark.parametrize("value", ["SIGUSR1", "usr1", str(int(signal.SIGUSR1))])
def test_the_stop_signal_is_read_by_name_or_number(value: str) -> None:
    """SMSUPERVISE_CHECKPOINT_SIGNAL may name the signal or give its number; unset means SIGTERM."""
    assert checkpoint.stop_signal({checkpoint.SIGNAL_VARIABLE: value}) == signal.SIGUSR1
    assert checkpoint.stop_signal({}) == signal.SIGTERM


def test_save_point_saves_once_after_the_signal_and_acknowledges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_usr1: None
) -> None:
    """Before the signal save_point() is False; after it, it saves once, writes the ack file, True."""
    done = tmp_path / "done"
    monkeypatch.setenv(checkpoint.SIGNAL_VARIABLE, "USR1")
    monkeypatch.setenv(checkpoint.DONE_VARIABLE, str(done))
    saves: list[int] = []
    stop = checkpoint.register(lambda: saves.append(1))
    assert not stop.save_point()
    os.kill(os.getpid(), signal.SIGUSR1)
    assert saves == []  # not in the handler
    assert stop.save_point()
    assert stop.save_point()
    assert saves == [1]
    assert done.read_text() == f"{os.getpid()}\n"


def test_save_now_saves_in_the_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_usr1: None
) -> None:
    """With save_now=True the checkpoint is saved and acknowledged as the signal arrives."""
    done = tmp_path / "done"
    monkeypatch.setenv(checkpoint.SIGNAL_VARIABLE, str(int(signal.SIGUSR1)))
    monkeypatch.setenv(checkpoint.DONE_VARIABLE, str(done))
    saves: list[int] = []
    checkpoint.register(lambda: saves.append(1), save_now=True)
    os.kill(os.getpid(), signal.SIGUSR1)
    assert saves == [1]
    assert done.exists()
