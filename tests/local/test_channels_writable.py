"""File-mode channels are writable, as on the service (a plain directory on the training volume:
the SDK's ModelTrainer runs ``chmod +x`` on a file in one), without copying the data: an overlay
with the staged data as its lower layer, so that the job's writes never reach the source. FastFile
channels stay read-only, as on the service."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.local.conftest import channel, model_file, needs_root, request, run, run_args


def _tree(root: Path) -> dict[str, bytes]:
    files = {"a.sh": b"#!/bin/sh\necho hi\n", "sub/b.bin": os.urandom(70_001)}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def _state(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: its sha256 and mode (what a write through a channel would change)."""
    return {
        str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@needs_root
@pytest.mark.parametrize("isolation", ["root", "userns"])
def test_file_channels_are_writable_and_the_source_stays_as_it_was(tmp_path: Path, isolation: str) -> None:
    """A directory, a single file and a ShardedByS3Key channel in File mode: the job creates a file,
    chmods +x and appends to an existing one, deletes one and makes directories; all succeed, on an
    overlay, and the sources (contents, modes, no new file, none gone) are untouched."""
    _tree(tmp_path / "train")
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "one.txt").write_bytes(b"one\n")
    (tmp_path / "parts").mkdir()
    for i in range(3):
        (tmp_path / "parts" / f"part-{i}.csv").write_text(f"{i}\n")
    before = {name: _state(tmp_path / name) for name in ("train", "single", "parts")}
    body = request(
        tmp_path,
        "channels",
        InputDataConfig=[
            channel("train", f"file://{tmp_path}/train"),
            channel("one", str(tmp_path / "single" / "one.txt")),
            channel("sharded", str(tmp_path / "parts"), distribution="ShardedByS3Key"),
        ],
    )
    result = run(tmp_path, body, "--isolation", isolation)
    assert result.returncode == 0, result.stderr
    seen = model_file(tmp_path, "channels")
    for name in ("train", "one", "sharded"):
        assert seen[name]["write_error"] is None, (name, seen[name])
        assert seen[name]["chmod_error"] is None, (name, seen[name])
        assert seen[name]["append_error"] is None, (name, seen[name])
        assert seen[name]["remove_error"] is None, (name, seen[name])
        assert seen[name]["mkdir_error"] is None, (name, seen[name])
        assert seen[name]["fstype"] == "overlay", (name, seen[name])
    assert {name: _state(tmp_path / name) for name in ("train", "single", "parts")} == before
    assert not stat.S_IXUSR & (tmp_path / "train" / "a.sh").stat().st_mode


@needs_root
def test_fastfile_channels_stay_read_only(tmp_path: Path) -> None:
    """The negative twin: the same directory as a FastFile channel refuses the create, the chmod,
    the append, the delete and the mkdir (EROFS), as on the service, and the source is untouched."""
    _tree(tmp_path / "train")
    before = _state(tmp_path / "train")
    body = request(
        tmp_path, "channels", InputDataConfig=[channel("fast", str(tmp_path / "train"), InputMode="FastFile")]
    )
    result = run(tmp_path, body)
    assert result.returncode == 0, result.stderr
    seen = model_file(tmp_path, "channels")["fast"]
    errors = ("write_error", "chmod_error", "append_error", "remove_error", "mkdir_error")
    assert tuple(seen[e] for e in errors) == ("Read-only file system",) * 5
    assert seen["mount"].split(",")[0] == "ro"
    assert _state(tmp_path / "train") == before


@needs_root
def test_where_the_kernel_refuses_the_overlay_the_channel_is_read_only_and_said(tmp_path: Path) -> None:
    """The fallback: the work dir on an overlayfs (as inside a container), which the kernel refuses
    as an upper layer: the channel is mounted read-only, the output says so, and the job runs. (The
    runner runs in a mount namespace of its own here, the overlay mounted there only.)"""
    _tree(tmp_path / "train")
    for name in ("lower", "upper", "work", "merged"):
        (tmp_path / "fs" / name).mkdir(parents=True)
    fs = tmp_path / "fs"
    body = request(tmp_path, "channels", InputDataConfig=[channel("train", str(tmp_path / "train"))])
    argv = run_args(tmp_path, body, work="merged-work")
    argv[argv.index("--work-dir") + 1] = f"{fs}/merged/work"
    mount = f"lowerdir={fs}/lower,upperdir={fs}/upper,workdir={fs}/work"
    script = f"mount -t overlay overlay -o {mount} {fs}/merged && exec {shlex.join(argv)}"
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=90, check=False
    )
    assert result.returncode == 0, result.stderr
    model = fs / "upper" / "work" / "hosts" / "algo-1" / "opt_ml" / "model" / "channels-algo-1.json"
    seen = json.loads(model.read_bytes())["train"]
    assert seen["write_error"] == "Read-only file system"
    assert seen["mount"].split(",")[0] == "ro"
    said = result.stdout + result.stderr  # the host's stderr, as the runner relays it
    assert "no overlay" in said
    assert "the channel is read-only instead" in said


@needs_root
@pytest.mark.parametrize("mode", ["File", "FastFile"])
def test_a_shard_of_symlinks_cannot_write_through_to_its_source(tmp_path: Path, mode: str) -> None:
    """ShardedByS3Key over a source on another filesystem than the work dir (/dev/shm here): the
    share is symlinks (no hard link across filesystems), and a chmod or a write through one would
    reach the source; the source is read-only in the host's mount namespace, so they fail (EROFS)
    and the source stays as it was."""
    shm = Path("/dev/shm") / f"smsupervise-test-{os.getpid()}-{mode}"
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's tmp dir")
    try:
        shm.mkdir()
        for i in range(2):
            (shm / f"part-{i}.sh").write_text(f"echo {i}\n")
        before = _state(shm)
        channels = [channel("sharded", str(shm), distribution="ShardedByS3Key", InputMode=mode)]
        result = run(tmp_path, request(tmp_path, "channels", InputDataConfig=channels))
        assert result.returncode == 0, result.stderr
        seen = model_file(tmp_path, "channels")["sharded"]
        assert sorted(seen["files"]) == ["part-0.sh", "part-1.sh"]
        assert (seen["chmod_error"], seen["append_error"]) == ("Read-only file system",) * 2
        assert _state(shm) == before
    finally:
        shutil.rmtree(shm, ignore_errors=True)
