"""Full filesystems, for real: a small tmpfs mounted as the model dir and a small private /dev/shm
(each in a mount namespace of its own, as root), as a subreaper and as PID 1. The failure names the
full filesystem, what filled it and where there is room; a bus error names /dev/shm's use and gives
advice that works on SageMaker; the twins keep other failures as they were."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON, events, helper, supervisor_argv
from tests.sagemaker import fixtures

JOB = helper("disk_job.py")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare for tmpfs mounts"
)


def _train(
    mode: str, base: Path, job: str, mounts: dict[str, str], interval: str = "0.1"
) -> subprocess.CompletedProcess[bytes]:
    """smsupervise train in a new mount namespace where each of ``mounts`` (path -> size) is a tmpfs."""
    script = " && ".join(f"mount -t tmpfs -o size={size} tmpfs {path}" for path, size in mounts.items())
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{script} && exec "$@"', "sh"]
    env = {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": f"{PYTHON} {JOB} {job}",
        "SMSUPERVISE_SAMPLE_INTERVAL": interval,
        "SMSUPERVISE_CONTROL_SOCKET": "none",
    }
    return subprocess.run(
        [*argv, *supervisor_argv(mode, "train")], env=env, capture_output=True, timeout=120, check=False
    )


def _named(stream: bytes, name: str) -> list[dict[str, Any]]:
    return [e for e in events(stream) if e["event"] == name]


def _outcome(base: Path) -> tuple[list[str], str]:
    output = base / "output"
    return (output / "failure").read_text().splitlines(), (output / "failure_class").read_text().strip()


def test_a_full_model_dir_is_named_with_what_filled_it_and_where_there_is_room(
    mode: str, tmp_path: Path
) -> None:
    """The job fills a 4 MiB tmpfs mounted as <base>/model: ENOSPC in its traceback; the failure
    starts with that filesystem, the file that filled it and the filesystem with room."""
    base = fixtures.example(tmp_path)
    model = base / "model"
    result = _train(mode, base, f"fill {model}", {str(model): "4m"})
    assert result.returncode == 1, result.stderr.decode()[-2000:]
    lines, failure_class = _outcome(base)
    assert lines[0].startswith(f"No space left on device: {model} (tmpfs at {model}, 4.0 MiB) was 100% full")
    assert f"largest files: {model}/blob 4.0 MiB" in lines[0]
    assert "/tmp" in lines[0].split("; ")[-1]  # the room: where /tmp is (another device)
    assert lines[1] == "Training exited with code 1."
    assert failure_class == "DiskFull"
    [layout] = _named(result.stderr, "disk_layout")
    [on_model] = [fs for fs in layout["filesystems"] if str(model) in fs["paths"]]
    assert (on_model["fstype"], on_model["size"]) == ("tmpfs", 4 << 20)
    assert {e["level"] for e in _named(result.stderr, "disk_filling")} <= {"90%", "95%", "99%"}


def test_enospc_on_a_filesystem_that_is_not_full_here_says_so(mode: str, tmp_path: Path) -> None:
    """The twin: an ENOSPC line while none of the job's filesystems is full names none of them."""
    base = fixtures.example(tmp_path)
    model = base / "model"
    result = _train(mode, base, "say-enospc", {str(model): "4m"})
    assert result.returncode == 1
    lines, failure_class = _outcome(base)
    assert lines[0].startswith("No space left on device, but none of the job's filesystems")
    assert str(model) not in lines[0]
    assert failure_class == "DiskFull"


def test_a_bus_error_with_a_full_dev_shm_names_it_and_gives_advice_that_works_on_sagemaker(
    mode: str, tmp_path: Path
) -> None:
    """A 2 MiB private /dev/shm; the job maps 8 MiB there and touches it: SIGBUS. The failure says
    how full /dev/shm was and what to do without --shm-size."""
    base = fixtures.example(tmp_path)
    result = _train(mode, base, "shm 8", {"/dev/shm": "2m"})
    assert result.returncode == 128 + 7, result.stderr.decode()[-2000:]
    lines, failure_class = _outcome(base)
    assert lines[0].startswith("Bus error with /dev/shm (2.0 MiB) 100% full at its peak")
    assert "num_workers" in lines[0]
    assert "raise --shm-size" not in "\n".join(lines)
    assert lines[1].startswith("Training was killed by SIGBUS")
    assert failure_class == "SharedMemory"


def test_a_bus_error_with_room_in_dev_shm_is_not_blamed_on_it(mode: str, tmp_path: Path) -> None:
    """The twin: SIGBUS while /dev/shm is empty is a plain signal death."""
    base = fixtures.example(tmp_path)
    result = _train(mode, base, "bus", {"/dev/shm": "2m"})
    assert result.returncode == 128 + 7
    lines, failure_class = _outcome(base)
    assert lines[0].startswith("Training was killed by SIGBUS")
    assert failure_class == "Signal"
