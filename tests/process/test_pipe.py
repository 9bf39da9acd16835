"""Pipe mode end to end: ``smsupervise --pipe-relay train`` as a subreaper and as PID 1, with the
emulator playing SageMaker's side; the relay's in-process data-path tests are in tests/aio.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from smsupervise.pipemode.emulate import recordio_records
from tests.conftest import (
    PYTHON,
    Supervised,
    events,
    init_prefix,
    readable_pythonpath,
    sleep_until,
    supervisor_argv,
)

EMULATE = [PYTHON, "-m", "smsupervise.pipemode.emulate"]
USER = 1000  # the job's user in the unprivileged tests: no capabilities after setpriv
SOFT_LIMIT = Path("/proc/sys/fs/pipe-user-pages-soft")
JOB_PYTHON = "/usr/bin/python3"  # the job's interpreter as that user (a root-only pyenv may be unreachable)


def _consume(path: Path) -> bytes:
    """Wait for the FIFO to exist, open it, read it to EOF."""
    sleep_until(path.exists, timeout=30, what=f"{path} to appear")
    return path.read_bytes()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _as_user(*argv: str) -> list[str]:
    return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", *argv]


def _user_problem() -> str | None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return "needs root and setpriv (util-linux) to run as an unprivileged user"
    for argv in ([PYTHON, "-c", "import smsupervise"], [JOB_PYTHON, "-c", "pass"]):
        env = {**os.environ, "PYTHONPATH": readable_pythonpath()}
        probe = subprocess.run(_as_user(*argv), capture_output=True, check=False, env=env)
        if probe.returncode != 0:
            return f"uid {USER} cannot run {argv[0]}: {probe.stderr.decode()[-300:]}"
    return None


@pytest.fixture
def user_tree() -> Iterator[Callable[[dict[str, str]], Path]]:
    """An /opt/ml tree the unprivileged user owns, in a directory every user may enter."""
    problem = _user_problem()
    if problem is not None:
        pytest.skip(problem)
    root = Path(tempfile.mkdtemp(prefix="smsupervise-pipe-", dir="/tmp"))
    root.chmod(0o755)

    def make(channels: dict[str, str]) -> Path:
        base = _pipe_tree(root, channels)
        for directory in [root, *root.rglob("*")]:
            os.chown(directory, USER, USER)
        return base

    yield make
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def small_pipe_budget() -> Iterator[int]:
    """pipe-user-pages-soft at 8192 pages (32 MiB) for the test, restored after even on failure."""
    before = SOFT_LIMIT.read_text()
    try:
        SOFT_LIMIT.write_text("8192")
    except OSError as error:
        pytest.skip(f"cannot set {SOFT_LIMIT}: {error}")
    try:
        yield 8192 * os.sysconf("SC_PAGE_SIZE")
    finally:
        SOFT_LIMIT.write_text(before)


# -- the emulator --------------------------------------------------------------------------------


def _emulate(data_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*EMULATE, "--data-dir", str(data_dir), *args], stderr=subprocess.PIPE)


def test_emulator_streams_a_directory_of_objects_as_recordio_for_several_epochs(tmp_path: Path) -> None:
    """A directory of gzip objects goes out as RecordIO records, gunzipped, for three epochs."""
    objects = tmp_path / "objects"
    (objects / "b").mkdir(parents=True)
    contents = {"a.bin": b"first", "b/c.bin": b"second object!", "b/d.bin": b""}
    for name, data in contents.items():
        (objects / name).write_bytes(gzip.compress(data))
    data_dir = tmp_path / "data"
    run = _emulate(data_dir, "--channel", f"train={objects}", "--epochs", "3", "--recordio", "--gunzip")
    for epoch in range(3):
        got = _consume(data_dir / f"train_{epoch}")
        assert recordio_records(got) == [contents[k] for k in sorted(contents)]
    _, err = run.communicate(timeout=10)
    assert run.returncode == 0
    assert [line for line in err.splitlines() if b"epoch_streamed" in line].__len__() == 3


def test_emulator_rejects_a_bad_channel_argument(tmp_path: Path) -> None:
    """A --channel without NAME=PATH is a usage error (exit 2) saying what to write."""
    result = subprocess.run(
        [*EMULATE, "--data-dir", str(tmp_path), "--channel", "train"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"use NAME=PATH" in result.stderr


# -- end to end, as PID 1 ----------------------------------------------------------------------


def _pipe_tree(root: Path, channels: dict[str, str]) -> Path:
    """An /opt/ml tree under ``root`` whose inputdataconfig.json has these channels and modes."""
    base = root / "ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "data").mkdir(parents=True)
    config = ",".join(f'"{ch}": {{"TrainingInputMode": "{mode}"}}' for ch, mode in channels.items())
    (base / "input" / "config" / "inputdataconfig.json").write_text("{" + config + "}")
    return base


READER = """
import hashlib, os, sys, time
channel = os.environ["SM_CHANNEL_TRAIN"]
for epoch in range(int(sys.argv[1])):
    path = f"{channel}_{epoch}"
    while not os.path.exists(path):  # PipeModeDataset-style: poll for the FIFO, then open it
        time.sleep(0.01)
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 16):
            digest.update(chunk); size += len(chunk)
    print(epoch, size, digest.hexdigest(), flush=True)
print("files", os.environ["SM_CHANNEL_FILES"], flush=True)
"""


def test_end_to_end_a_pipe_mode_reader_through_the_relay(mode: str, tmp_path: Path) -> None:
    """smsupervise --pipe-relay train with the emulator: a polling reader sees every epoch exactly;
    a File channel is left alone; per-epoch metrics arrive as events; the relay dir is removed."""
    base = _pipe_tree(tmp_path, {"train": "Pipe", "files": "File"})
    source = tmp_path / "train.bin"
    data = random.Random(1).randbytes(9 << 20)
    source.write_bytes(data)
    emulator = _emulate(base / "input" / "data", "--channel", f"train={source}", "--epochs", "2")
    script = tmp_path / "reader.py"
    script.write_text(READER)
    relay_dir = tmp_path / "relay"
    env = {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": f"{PYTHON} {script} 2",
    }
    result = subprocess.run(
        supervisor_argv(mode, "--pipe-relay", "--pipe-relay-dir", str(relay_dir), "train"),
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    emulator.communicate(timeout=30)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    lines = [record["msg"] for record in map(_json, result.stdout.splitlines()) if "msg" in record]
    assert lines[:2] == [f"{epoch} {len(data)} {_sha(data)}" for epoch in range(2)]
    assert lines[2] == f"files {base}/input/data/files"
    done = [e for e in events(result.stderr) if e["event"] == "pipe_epoch_done"]
    assert [(e["epoch"], e["bytes"], e["ended"]) for e in done] == [
        (0, len(data), "eof"),
        (1, len(data), "eof"),
    ]
    assert all(e["mb_per_s"] > 0 for e in done)
    assert not relay_dir.exists()


def test_with_the_relay_on_signals_and_stops_still_work(mode: str, tmp_path: Path) -> None:
    """A trainer blocked on a channel nobody feeds: SIGUSR1 is still forwarded, SIGPIPE (which the
    relay's feeders are woken with) is not, SIGTERM still stops it (no SIGKILL needed), orphans
    are still reaped, and smsupervise exits with the child's status."""
    base = _pipe_tree(tmp_path, {"train": "Pipe"})
    os.mkfifo(base / "input" / "data" / "train_0")  # the platform made it but never writes
    marker = tmp_path / "usr1"
    opened = tmp_path / "opened"  # written by the trainer itself once open() returned
    script = tmp_path / "blocked.py"
    script.write_text(
        "import os, signal, subprocess, sys\n"
        f"signal.signal(signal.SIGUSR1, lambda *a: open({str(marker)!r}, 'w').close())\n"
        "subprocess.Popen(['sleep', '1000'], start_new_session=True)  # an orphan-to-be\n"
        "fd = os.open(os.environ['SM_CHANNEL_TRAIN'] + '_0', os.O_RDONLY)\n"
        f"open({str(opened)!r}, 'w').close()\n"
        "while True: signal.pause()\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": f"{PYTHON} {script}",
    }
    run = Supervised(mode, supervisor_argv(mode, "--pipe-relay", "--grace-period", "5", "train"), env=env)
    # The trainer's own word, not /proc: between fork and exec the job's process still holds the
    # relay's (close-on-exec) fds, and a SIGUSR1 sent then arrives before the handler exists.
    sleep_until(opened.exists, what="the trainer to open its FIFO")
    run.signal(signal.SIGPIPE)  # the feeders' wake-up signal: handled, and still never forwarded
    run.signal(signal.SIGUSR1)
    sleep_until(marker.exists, what="SIGUSR1 to reach the trainer")
    run.signal(signal.SIGTERM)
    code, _, err = run.wait(timeout=30)
    assert code == 143  # a forwarded SIGPIPE would have killed the trainer (141)
    forwarded = [e["signal"] for e in events(err) if e["event"] == "signal_forwarded"]
    assert forwarded == ["SIGUSR1", "SIGTERM"]
    names = [e["event"] for e in events(err)]
    assert names.index("stop_requested") < names.index("child_exited") < names.index("leftovers_terminated")
    assert "grace_expired" not in names


def _json(line: bytes) -> dict[str, Any]:
    value = orjson.loads(line)
    return value if isinstance(value, dict) else {}


def _messages(stdout: bytes) -> list[str]:
    return [record["msg"] for record in map(_json, stdout.splitlines()) if "msg" in record]


def _one(stream: bytes, name: str) -> dict[str, Any]:
    (found,) = [e for e in events(stream) if e["event"] == name]
    return found


# -- a relay that fails, and the relay dir ----------------------------------------------------------

READ_ONCE = """
import os, time
path = os.environ["SM_CHANNEL_TRAIN"] + "_0"
while not os.path.exists(path):
    time.sleep(0.01)
with open(path, "rb") as handle:
    print("got", len(handle.read()), flush=True)
"""


def test_a_failed_channel_gives_the_job_eof_and_the_event_names_channel_and_cause(
    mode: str, user_tree: Callable[[dict[str, str]], Path]
) -> None:
    """The platform's FIFO cannot be opened by the job's user: the job's FIFO gives EOF at once (it
    does not wait in open() forever), the run ends with the job's code, and pipe_relay_failed
    names the channel, the epoch, the cause and the path; the relay dir is cleaned up."""
    base = user_tree({"train": "Pipe"})
    data_dir = base / "input" / "data"
    os.chown(data_dir, 0, 0)
    upstream = data_dir / "train_0"
    os.mkfifo(upstream, 0o600)  # root's: the unprivileged relay gets EACCES
    script = base / "read_once.py"
    script.write_text(READ_ONCE)
    relay_dir = base / "relay"
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": readable_pythonpath(),  # smsupervise as uid 1000, from a checkout it may not read
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": f"{JOB_PYTHON} {script}",
    }
    argv = [*init_prefix(mode), *_as_user(PYTHON, "-m", "smsupervise")]
    result = subprocess.run(
        [*argv, "--pipe-relay", "--pipe-relay-dir", str(relay_dir), "train"],
        env=env,
        cwd="/",  # uid 1000 may not enter this checkout (a clone in a mktemp -d directory)
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert _messages(result.stdout) == ["got 0"]
    failed = _one(result.stderr, "pipe_relay_failed")
    assert (failed["channel"], failed["epoch"], failed["path"]) == ("train", 0, str(upstream))
    assert failed["error"].startswith("PermissionError")
    assert failed["fifo"] == str(relay_dir / "train_0")
    assert not relay_dir.exists()
    assert upstream.exists()
    failure = (base / "output" / "failure").read_text()  # the job exited 0 on an early EOF: not a success
    assert "the Pipe relay of channel 'train' failed in epoch 0: PermissionError" in failure
    assert not (base / "output" / "success").exists()


def _with_relay_dir(mode: str, base: Path, relay_dir: Path) -> subprocess.CompletedProcess[bytes]:
    """``smsupervise --pipe-relay --pipe-relay-dir RELAY_DIR train`` on ``base`` with a no-op job."""
    env = {"PATH": os.environ["PATH"], "SAGEMAKER_BASE_DIR": str(base), "SMSUPERVISE_TRAIN": "true"}
    return subprocess.run(
        supervisor_argv(mode, "--pipe-relay", "--pipe-relay-dir", str(relay_dir), "train"),
        env=env,
        cwd="/",  # uid 1000 may not enter this checkout (a clone in a mktemp -d directory)
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_a_relay_dir_holding_a_channel_file_is_refused_and_left_as_it_was(mode: str, tmp_path: Path) -> None:
    """``--pipe-relay-dir`` with a regular file ``train_0`` in it: exit 2 naming the file and the
    fix, and the file is untouched (it is not a FIFO the relay made)."""
    base = _pipe_tree(tmp_path, {"train": "Pipe"})
    relay_dir = tmp_path / "relay"
    relay_dir.mkdir()
    (relay_dir / "train_0").write_text("keep me")
    result = _with_relay_dir(mode, base, relay_dir)
    assert result.returncode == 2, result.stderr.decode()[-3000:]
    error = _one(result.stderr, "start_failed")["error"]
    assert f"--pipe-relay-dir {relay_dir}" in error
    assert "train_0" in error
    assert (relay_dir / "train_0").read_text() == "keep me"


def test_a_relay_dir_with_other_files_is_used_and_only_the_relays_fifos_go(mode: str, tmp_path: Path) -> None:
    """The negative twin: files that are not ``<channel>_<N>`` do not stop the run; at exit the
    relay's own FIFO is gone and they are still there, as is the dir the relay did not make."""
    base = _pipe_tree(tmp_path, {"train": "Pipe"})
    os.mkfifo(base / "input" / "data" / "train_0")  # the platform's, mirrored before the job starts
    relay_dir = tmp_path / "relay"
    relay_dir.mkdir()
    (relay_dir / "train_notes").write_text("mine")
    env = {
        "PATH": os.environ["PATH"],
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": f"sh -c 'test -p {relay_dir}/train_0'",  # our FIFO is there while it runs
    }
    result = subprocess.run(
        supervisor_argv(mode, "--pipe-relay", "--pipe-relay-dir", str(relay_dir), "train"),
        env=env,
        cwd="/",  # uid 1000 may not enter this checkout (a clone in a mktemp -d directory)
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert sorted(os.listdir(relay_dir)) == ["train_notes"]
    assert (base / "input" / "data" / "train_0").exists()


def test_the_platform_data_dir_is_refused_as_the_relay_dir(mode: str, tmp_path: Path) -> None:
    """``--pipe-relay-dir`` naming the platform's data dir: exit 2, and the platform's FIFO is still
    there (today it is deleted and replaced by the relay's own)."""
    base = _pipe_tree(tmp_path, {"train": "Pipe"})
    data_dir = base / "input" / "data"
    os.mkfifo(data_dir / "train_0")
    result = _with_relay_dir(mode, base, data_dir)
    assert result.returncode == 2, result.stderr.decode()[-3000:]
    assert "platform's Pipe-mode data dir" in _one(result.stderr, "start_failed")["error"]
    assert (data_dir / "train_0").is_fifo()


# -- the pipe budget -----------------------------------------------------------------------------

CHANNELS = ["train", "validation", "test", "extra"]
READ_ALL = """
import hashlib, os
for channel in sys_channels:
    path = os.environ["SMSUPERVISE_PIPE_DIR"] + f"/{channel}_0"
    while not os.path.exists(path):
        pass
    with open(path, "rb") as handle:
        print(channel, hashlib.sha256(handle.read()).hexdigest(), flush=True)
""".replace("sys_channels", repr(CHANNELS))


def _four_channels(base: Path, as_user: bool) -> tuple[subprocess.CompletedProcess[bytes], dict[str, bytes]]:
    """Stream four channels (the emulator as the same user) through smsupervise reading them all."""
    payload = {ch: random.Random(ch).randbytes(6 << 20) for ch in CHANNELS}
    for ch, data in payload.items():
        (base / f"{ch}.bin").write_bytes(data)
    script = base / "read_all.py"
    script.write_text(READ_ALL)
    wrap = _as_user if as_user else (lambda *argv: list(argv))
    channels = [arg for ch in CHANNELS for arg in ("--channel", f"{ch}={base / f'{ch}.bin'}")]
    emulator = subprocess.Popen(
        wrap(*EMULATE, "--data-dir", str(base / "input" / "data"), *channels),
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": readable_pythonpath()},  # as uid 1000: a checkout it may not read
        cwd="/",
    )
    job = JOB_PYTHON if as_user else PYTHON
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": readable_pythonpath(),  # smsupervise as uid 1000, from a checkout it may not read
        "SAGEMAKER_BASE_DIR": str(base),
        "SMSUPERVISE_TRAIN": f"{job} {script}",
    }
    result = subprocess.run(
        wrap(PYTHON, "-m", "smsupervise", "--pipe-relay", "--pipe-relay-dir", str(base / "relay"), "train"),
        env=env,
        cwd="/",  # uid 1000 may not enter this checkout (a clone in a mktemp -d directory)
        capture_output=True,
        timeout=60,
        check=False,
    )
    emulator.communicate(timeout=30)
    return result, payload


def test_rings_share_a_small_pipe_budget_as_an_unprivileged_user(
    user_tree: Callable[[dict[str, str]], Path], small_pipe_budget: int
) -> None:
    """uid 1000 without capabilities under a 32 MiB pipe-user-pages-soft, four channels asking for
    64 MiB rings each: the run succeeds, every channel is byte-exact, pipe_relay_started reports
    rings cut to fit the budget, and no epoch's ring got more than planned."""
    base = user_tree(dict.fromkeys(CHANNELS, "Pipe"))
    result, payload = _four_channels(base, as_user=True)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert _messages(result.stdout) == [f"{ch} {_sha(data)}" for ch, data in payload.items()]
    started = _one(result.stderr, "pipe_relay_started")
    assert started["pipe_budget"]["limit"] == small_pipe_budget
    rings = started["rings"]
    assert sorted(rings) == sorted(CHANNELS)
    assert all(1 << 20 <= ring < started["ring_bytes"] for ring in rings.values())
    assert sum(rings.values()) + started["pipe_budget"]["reserved"] <= small_pipe_budget
    for epoch in (e for e in events(result.stderr) if e["event"] == "pipe_epoch_done"):
        assert epoch["ring_bytes"] <= rings[epoch["channel"]]


def test_with_cap_sys_admin_the_rings_are_not_reduced(
    user_tree: Callable[[dict[str, str]], Path], small_pipe_budget: int
) -> None:
    """The negative twin: root with its capabilities is not bound by the soft limit, so every ring
    keeps the 64 MiB asked for and the event says no limit applied."""
    base = user_tree(dict.fromkeys(CHANNELS, "Pipe"))
    result, payload = _four_channels(base, as_user=False)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert _messages(result.stdout) == [f"{ch} {_sha(data)}" for ch, data in payload.items()]
    started = _one(result.stderr, "pipe_relay_started")
    assert started["pipe_budget"]["limit"] is None
    assert started["rings"] == dict.fromkeys(CHANNELS, 64 << 20)
    assert small_pipe_budget > 0
