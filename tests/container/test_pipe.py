"""Pipe mode and pipe sizes in a hardened container: read-only root, uid 1000, no capabilities."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.container.conftest import TESTS
from tests.container.podman import MlTree, Podman
from tests.container.test_stop import HARDENED

EMULATOR = str(Path(sys.executable).parent / "smsupervise-pipe-emulate")
PIPE_PROBE = """\
import fcntl, os
print(fcntl.fcntl(1, fcntl.F_GETPIPE_SZ), flush=True)
read_end, write_end = os.pipe()
print(fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20), flush=True)
try:
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 2 << 20)
except PermissionError:
    print("EPERM", flush=True)
"""


def test_pipe_relay_byte_exact_over_two_epochs(podman: Podman, image: str, tmp_path: Path) -> None:
    """The emulator on the host feeds input/data; `--pipe-relay` in a hardened container relays it exactly."""
    source = tmp_path / "train.bin"
    source.write_bytes(os.urandom(24 << 20))
    expected = {"bytes": 24 << 20, "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    ml = MlTree(tmp_path / "ml", channels={"train": "Pipe"}, data=False)
    ml.chown(1000, 1000)
    # The emulator (root here) makes its FIFOs 0660; the set-group-ID data dir gives them group 1000,
    # so the container's user 1000:1000 may open them, as it must on the platform.
    (ml.path / "input" / "data").chmod(0o2775)
    emulator = subprocess.Popen(
        [
            EMULATOR,
            "--data-dir",
            str(ml.path / "input" / "data"),
            "--channel",
            f"train={source}",
            "--epochs",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        options = [*ml.mounts(), *TESTS, *HARDENED]
        options += ["--env", "SMSUPERVISE_TRAIN=python3 /tests/container/jobs/pipe_reader.py 2"]
        result = podman.run(image, "--pipe-relay", "train", options=options)
        _, emulated = emulator.communicate(timeout=60)
    finally:
        if emulator.poll() is None:
            emulator.kill()
            emulator.communicate()
    assert result.code == 0, result.err.decode()
    assert emulator.returncode == 0, emulated.decode()
    assert json.loads(ml.read("model/pipe.json")) == [expected, expected]
    started = next(e for e in result.events() if e["event"] == "pipe_relay_started")
    assert started["upstream_dir"] == "/opt/ml/input/data"
    epochs = [e for e in result.events() if e["event"] == "pipe_epoch_done"]
    assert [(e["channel"], e["epoch"], e["bytes"], e["ended"]) for e in epochs] == [
        ("train", 0, 24 << 20, "eof"),
        ("train", 1, 24 << 20, "eof"),
    ]
    assert (ml.path / "output" / "success").exists()


def test_pipes_are_1_mib_without_cap_sys_resource(podman: Podman, image: str) -> None:
    """Hardened, the job's log pipe is 1 MiB (the unprivileged maximum) and 2 MiB is refused."""
    result = podman.run(image, "python3", "-c", PIPE_PROBE, options=HARDENED)
    assert result.code == 0, result.err.decode()
    assert [r["msg"] for r in result.records()] == ["1048576", "1048576", "EPERM"]


def test_failed_relay_does_not_leave_the_job_blocked(podman: Podman, image: str, tmp_path: Path) -> None:
    """A relay that cannot open the platform's FIFO gives the job EOF at once (no hang in open()):
    the job's own exit code comes back, and the failure file names the channel and the cause."""
    ml = MlTree(tmp_path / "ml", channels={"train": "Pipe"}, data=False)
    ml.chown(1000, 1000)
    os.mkfifo(ml.path / "input/data/train_0", 0o600)  # root's: the job's user 1000 may not open it
    reader = "import os; open(os.environ['SM_CHANNEL_TRAIN'] + '_0', 'rb').read()"
    options = [*ml.mounts(), "--user", "1000:1000", "--env", f"SMSUPERVISE_TRAIN=python3 -c {reader!r}"]
    job = podman.start(image, "--pipe-relay", "train", options=options)
    assert "Permission denied" in job.wait_for_event("pipe_relay_failed", channel="train")["error"]
    assert job.proc.wait(timeout=60) == 0  # the reader got EOF and returned: its code stands
    failure = ml.read("output/failure")
    assert "the Pipe relay of channel 'train' failed in epoch 0" in failure
    assert "Permission denied" in failure
