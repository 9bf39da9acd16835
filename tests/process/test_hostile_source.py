"""Source archives and configuration built to hang or crash `train` (issue 29), as PID 1 and as
subreaper: the 2 KiB archive that loops tarfile for ever, a SIGTERM while the plan still reads a
slow archive, and a tree deeper than any recursion, stopped half-way and then run again."""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from smsupervise.sagemaker.removal import remove_tree
from tests.conftest import PYTHON, Supervised, event_names, events, supervisor_argv
from tests.sagemaker import fixtures

BODY = b"open('TRAINED', 'w').close()\n"


def _job(tmp_path: Path, tarball: Path) -> tuple[Path, dict[str, str]]:
    base = fixtures.build(tmp_path, hyperparameters={})
    hps_file = base / "input" / "config" / "hyperparameters.json"
    hps = json.loads(hps_file.read_text())
    hps["sagemaker_submit_directory"] = json.dumps(str(tarball))
    hps_file.write_text(json.dumps(hps))
    env = {"PATH": os.environ["PATH"], "SAGEMAKER_BASE_DIR": str(base), "SMSUPERVISE_PYTHON": PYTHON}
    return base, env


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT)


def _entry() -> bytes:
    return _header("train.py", len(BODY)) + BODY + b"\0" * (-len(BODY) % 512)


def _negative_size_tarball(path: Path) -> Path:
    """The 2 KiB archive of the report: train.py, then a member whose size is -512 (GNU base-256)."""
    block = bytearray(_header("neg.bin", 0))
    block[124:136] = bytes([0xFF]) + ((-512) & ((1 << 88) - 1)).to_bytes(11, "big")
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    path.write_bytes(_entry() + bytes(block) + b"\0" * 1024)
    return path


def test_the_negative_size_archive_is_refused_not_looped_on(mode: str, tmp_path: Path) -> None:
    """`train` with that archive ends at once with exit 2 (it looped for ever, memory growing, deaf
    to SIGTERM): the failure file names the file, the field, the member and the fix; nothing ran."""
    base, env = _job(tmp_path, _negative_size_tarball(tmp_path / "neg.tar"))
    result = subprocess.run(
        supervisor_argv(mode, "train"), env=env, capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 2, result.stderr.decode()[-2000:]
    failure = (base / "output" / "failure").read_text()
    for needle in (
        "hyperparameters.json",
        "sagemaker_submit_directory",
        "'neg.bin'",
        "negative size",
        "rebuild",
    ):
        assert needle in failure, failure
    assert "child_spawned" not in event_names(result.stderr)
    assert list((base / "code").iterdir()) == []


def test_the_same_archive_with_a_real_size_trains(mode: str, tmp_path: Path) -> None:
    """The twin: the same members with a size of 0 unpack and train."""
    tarball = tmp_path / "ok.tar"
    tarball.write_bytes(_entry() + _header("empty.bin", 0) + b"\0" * 1024)
    base, env = _job(tmp_path, tarball)
    result = subprocess.run(
        supervisor_argv(mode, "train"), env=env, capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert (base / "code" / "TRAINED").exists()


ZEROS = 1 << 20
GIGS = 16  # GiB of zeros behind one header (under --source-max-bytes): seconds to decompress


def _slow_tarball(path: Path) -> Path:
    """A gzip of train.py and a member of GIGS GiB of zeros, made in moments from repeated gzip
    members of 1 MiB of zeros (gzip readers take a concatenation as one stream): ~70 MB on disk."""
    zeros = gzip.compress(b"\0" * ZEROS, 1)
    with path.open("wb") as out:
        out.write(gzip.compress(_entry() + _header("big.bin", GIGS << 30), 1))
        for _ in range(GIGS << 10):
            out.write(zeros)
        out.write(gzip.compress(b"\0" * 1024, 1))
    return path


def _planning(run: Supervised, tarball: Path, base: Path) -> bool:
    """smsupervise holds the archive open and no staging dir exists yet: the plan is reading it."""
    try:
        held = {os.readlink(f"/proc/{run.init_pid}/fd/{fd}") for fd in os.listdir(f"/proc/{run.init_pid}/fd")}
    except OSError:
        return False
    return str(tarball) in held and not list(base.glob(".smsupervise-source-*"))


def test_a_sigterm_while_the_plan_reads_the_archive_ends_the_run(mode: str, tmp_path: Path) -> None:
    """SIGTERM while planning still reads a slow archive (before the loop exists): the run ends as
    a stop before training started (143), saying it stopped while planning, with nothing unpacked
    (before: the signal waited until the whole archive had been read)."""
    tarball = _slow_tarball(tmp_path / "slow.tar.gz")
    base, env = _job(tmp_path, tarball)
    run = Supervised(mode, supervisor_argv(mode, "train"), env=env, cwd=tmp_path)
    code, _, err = run.signal_when(lambda: _planning(run, tarball, base), what="the plan to read the archive")
    assert code == 143, err.decode()[-2000:]
    stopped = next(e for e in events(err) if e["event"] == "source_stopped")
    assert stopped["when"].startswith("while planning"), stopped
    assert "child_spawned" not in event_names(err)
    assert list((base / "code").iterdir()) == []
    assert not list(base.glob(".smsupervise-source-*"))
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("Stopped by SIGTERM after"), failure
    assert "had not started" in failure


DEPTH = 3 * sys.getrecursionlimit()


def _deep_tarball(path: Path) -> Path:
    """train.py, a file DEPTH directories deep, then 4 GiB of zeros (sparse on disk): a stop lands
    in the last member with the deep tree already unpacked."""
    deep = tarfile.TarInfo("d/" * DEPTH + "f.txt")
    deep.size = 1
    big = tarfile.TarInfo("big.bin")
    big.size = 4 << 30
    with path.open("wb") as out:
        out.write(_entry())
        out.write(deep.tobuf(tarfile.PAX_FORMAT) + b"x" + b"\0" * 511)
        out.write(big.tobuf(tarfile.PAX_FORMAT))
        out.truncate(out.tell() + big.size + 1024)
    return path


def test_a_stop_after_a_deep_tree_then_the_next_run(mode: str, tmp_path: Path) -> None:
    """A tree DEPTH levels deep is unpacked, then SIGTERM: exit 143 and nothing left (a recursive
    cleanup died here with exit 70, leaving the tree); the next run on the same tree starts clean
    (it died too, on the leftover) and stops the same way."""
    base, env = _job(tmp_path, _deep_tarball(tmp_path / "deep.tar"))
    try:
        for _ in range(2):
            run = Supervised(mode, supervisor_argv(mode, "train"), env=env, cwd=tmp_path)
            code, _, err = run.signal_when(
                lambda: [*base.glob(".smsupervise-source-*/big.bin")], what="the unpack to reach big.bin"
            )
            assert code == 143, err.decode()[-3000:]
            assert "source_stopped" in event_names(err)
            assert not list(base.glob(".smsupervise-source-*"))
            assert list((base / "code").iterdir()) == []
    finally:
        for leftover in base.glob(".smsupervise-source-*"):  # pytest's own cleanup would recurse
            remove_tree(str(leftover))


def _config_run(mode: str, tmp_path: Path, hyperparameters: dict[str, str]) -> tuple[int, bytes, Path]:
    base = fixtures.build(tmp_path, hyperparameters=hyperparameters)
    env = {"PATH": os.environ["PATH"], "SAGEMAKER_BASE_DIR": str(base), "SMSUPERVISE_PYTHON": PYTHON}
    env["DUMP"] = str(tmp_path / "dump.json")  # where the fixture's train.py writes what it saw
    result = subprocess.run(
        supervisor_argv(mode, "train"), env=env, capture_output=True, timeout=120, check=False
    )
    return result.returncode, result.stderr, base


def _nested_text(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (json.dumps("a\0b"), "NUL"),  # "a\u0000b" in the file: the report's example
        (json.dumps({"k": "a\0b"}), "NUL"),  # nested in the value's JSON
        (json.dumps("\ud800"), "lone surrogate"),
        (_nested_text(985), "nests JSON"),
        (_nested_text(983), "nests JSON"),
    ],
    ids=["nul", "nested-nul", "surrogate", "depth-985", "depth-983"],
)
def test_a_hyperparameter_no_process_can_take_is_exit_2(
    mode: str, tmp_path: Path, value: str, needle: str
) -> None:
    """A hyperparameter that passed the check and crashed later (exit 70): exit 2 before anything
    runs, the failure file naming hyperparameters.json, the hyperparameter and the fix."""
    code, err, base = _config_run(mode, tmp_path, {"bad": value, "epochs": "3"})
    assert code == 2, err.decode()[-2000:]
    failure = (base / "output" / "failure").read_text()
    assert "hyperparameters.json: field 'bad'" in failure, failure
    assert needle in failure
    assert "child_spawned" not in event_names(err)


def test_the_same_hyperparameters_plainly_train(mode: str, tmp_path: Path) -> None:
    """The twin: a plain character where the NUL was, and nesting 20 deep, train (exit 0)."""
    code, err, _ = _config_run(
        mode, tmp_path, {"bad": json.dumps("a b"), "deep": _nested_text(20), "epochs": "3"}
    )
    assert code == 0, err.decode()[-2000:]
    assert json.loads((tmp_path / "dump.json").read_text())["argv"][:2] == ["--bad", "a b"]


def _small_stack() -> None:
    """In the child before exec: a 1 MiB stack limit, so ARG_MAX (a quarter of it) is 256 KiB."""
    resource.setrlimit(resource.RLIMIT_STACK, (1 << 20, resource.getrlimit(resource.RLIMIT_STACK)[1]))


def _argmax_run(mode: str, tmp_path: Path, small_stack: bool) -> tuple[int, bytes, Path]:
    """Three hyperparameters of 20 KB: every variable far under 128 KiB, all of them together (each
    value is in SM_HP_*, SM_HPS, SM_TRAINING_ENV, SM_USER_ARGS and the arguments) about 300 KB."""
    hps = {f"blob{index}": json.dumps("x" * 20_000) for index in range(3)}
    base = fixtures.build(tmp_path, hyperparameters=hps)
    env = {"PATH": os.environ["PATH"], "SAGEMAKER_BASE_DIR": str(base), "SMSUPERVISE_PYTHON": PYTHON}
    env["DUMP"] = str(tmp_path / "dump.json")
    result = subprocess.run(
        supervisor_argv(mode, "train"),
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
        preexec_fn=_small_stack if small_stack else None,
    )
    return result.returncode, result.stderr, base


def test_arguments_and_environment_over_arg_max_together_are_exit_2(mode: str, tmp_path: Path) -> None:
    """Each variable under the kernel's 128 KiB, all together over ARG_MAX (256 KiB here): exit 2
    before anything runs, the failure file naming hyperparameters.json, a hyperparameter, ARG_MAX
    and the limit (it was "python3: Argument list too long" from the spawn)."""
    code, err, base = _argmax_run(mode, tmp_path, small_stack=True)
    assert code == 2, err.decode()[-2000:]
    failure = (base / "output" / "failure").read_text()
    assert "hyperparameters.json: field 'blob" in failure, failure
    assert "ARG_MAX" in failure
    assert str(256 << 10) in failure
    assert "Argument list too long" not in failure
    assert "child_spawned" not in event_names(err)


def test_the_same_hyperparameters_with_the_usual_stack_train(mode: str, tmp_path: Path) -> None:
    """The twin: with the default stack limit (ARG_MAX 2 MiB) the same job trains."""
    code, err, _ = _argmax_run(mode, tmp_path, small_stack=False)
    assert code == 0, err.decode()[-2000:]
    assert len(json.loads((tmp_path / "dump.json").read_text())["argv"]) == 6
