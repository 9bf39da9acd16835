"""What counts as "no space" and "bus error" in a job's last lines, over the class of renderings
(Python, C, Rust, Java, PyTorch), and what must not; the filesystem layout on this machine."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsupervise.diagnose import disks

NO_SPACE = [
    "OSError: [Errno 28] No space left on device: '/opt/ml/model/x.bin'",
    "write error: No space left on device",  # coreutils / strerror
    "Error: No space left on device (os error 28)",  # Rust
    "java.io.IOException: No space left on device",
    "RuntimeError: errno: 28 ENOSPC",
    "tar: ./data: Cannot write: No space left on device",
    "NO SPACE LEFT ON DEVICE",
]
NOT_NO_SPACE = [
    "OSError: [Errno 2] No such file or directory",
    "errno 280 is not a thing",
    "loaded 28 files",
    "There is space left on device",
    "Traceback (most recent call last):\nValueError: bad input",
]
BUS = [
    "RuntimeError: DataLoader worker (pid 13) is killed by signal: Bus error.",
    "ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient shared memory",
    "Bus error (core dumped)",
]
NOT_BUS = [
    "bus stop",
    "the omnibus error handler",
    "RuntimeError: DataLoader worker (pid 13) is killed by signal: Killed.",
]


@pytest.mark.parametrize("line", NO_SPACE)
def test_every_rendering_of_enospc_counts(line: str) -> None:
    assert disks.enospc(line.encode())


@pytest.mark.parametrize("line", NOT_NO_SPACE)
def test_lines_that_are_not_enospc_do_not(line: str) -> None:
    """The twin: another errno, a number 28 elsewhere, a sentence that only looks alike."""
    assert not disks.enospc(line.encode())


@pytest.mark.parametrize("line", BUS)
def test_every_bus_error_counts(line: str) -> None:
    assert disks.bus_error(line.encode())


@pytest.mark.parametrize("line", NOT_BUS)
def test_words_that_only_contain_bus_do_not(line: str) -> None:
    assert not disks.bus_error(line.encode())


def test_torch_saves_errno_less_failure_is_a_failed_write() -> None:
    """torch.save on a full disk says only that the write failed: it counts when a filesystem was full."""
    line = (
        b"RuntimeError: [enforce fail at inline_container.cc:595] . "
        b"PytorchStreamWriter failed writing file data/3: file write failed"
    )
    assert disks.write_failed(line)
    assert not disks.write_failed(b"RuntimeError: CUDA error: out of memory")


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_enospc_is_found_wherever_it_is_in_the_tail(before: bytes, after: bytes) -> None:
    """Any bytes around it (binary junk, invalid UTF-8): the line is still found."""
    assert disks.enospc(before + b"\nOSError: [Errno 28] No space left on device\n" + after)


def test_the_layout_is_one_entry_per_device_with_every_path() -> None:
    """/ and /tmp on one device here are one entry holding both paths; a missing path is left out."""
    states = disks.layout(["/", "/tmp", "/dev/shm", "/no/such/path"])
    devices = [s.device for s in states]
    assert len(devices) == len(set(devices))
    paths = [p for s in states for p in s.paths]
    assert "/no/such/path" not in paths
    assert set(paths) == {"/", "/tmp", "/dev/shm"}
    shm = next(s for s in states if "/dev/shm" in s.paths)
    assert shm.mount == "/dev/shm"
    assert shm.size > 0
    assert os.stat("/dev/shm").st_dev == shm.device


def test_crossing_levels() -> None:
    """A warning per level crossed upwards, the highest when several are crossed at once; none going down."""
    assert disks.crossed(0.5, 0.91) == 0.90
    assert disks.crossed(0.5, 1.0) == 0.99
    assert disks.crossed(0.91, 0.96) == 0.95
    assert disks.crossed(0.96, 0.5) is None
    assert disks.crossed(0.95, 0.95) is None
