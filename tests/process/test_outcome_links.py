"""The outcome file is written by root into a directory the job may write in: a job that dropped
root and planted symlinks at every name it can predict (the temporary names ``<name>.<pid>.tmp``
for every pid up to its supervisor's and beyond, the final names, the output dir itself) never makes
root write or truncate another file. As a subreaper and as PID 1, for failure and for success."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PYTHON, event_names, supervisor_argv

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job drops root: needs root")

NOBODY = 65534
# The job: open the output dir to the job user, drop root, plant the links, then end with CODE.
JOB = r"""
import os, sys
base, victim, plant, code = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
out = os.path.join(base, "output")
os.chmod(base, 0o777)
os.chmod(out, 0o777)
os.setgroups([]); os.setgid(65534); os.setuid(65534)
chain, pid = set(), os.getpid()
while pid > 1:  # every ancestor's pid (the supervisor's among them), and the low ones
    pid = int(next(l for l in open(f"/proc/{pid}/status") if l.startswith("PPid:")).split()[1])
    chain.add(pid)
for name in ("failure", "success"):
    for number in chain | set(range(1, 3000)):
        os.symlink(victim, os.path.join(out, f"{name}.{number}.tmp"))
        os.symlink(victim, os.path.join(out, f".{name}.{number}.tmp"))
if plant == "final":
    os.symlink(victim, os.path.join(out, "failure"))
    os.symlink(victim, os.path.join(out, "success"))
elif plant == "outdir":
    os.rename(out, out + ".moved")
    os.symlink(os.path.dirname(victim), out)
elif plant == "own":
    open(os.path.join(out, "failure"), "w").write("the program's own words")
print("planted", flush=True)
sys.exit(code)
"""


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory the job user can reach (pytest's tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="smsupervise-outcome-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _run(mode: str, place: Path, plant: str, code: int) -> tuple[int, bytes, Path, Path]:
    """The job above under smsupervise train; returns (exit code, stderr, base, victim)."""
    base = place / "ml"
    (base / "output").mkdir(parents=True)
    victims = place / "victims"
    victims.mkdir(mode=0o755)
    victim = victims / "precious"
    victim.write_text("root's precious file")
    victim.chmod(0o644)
    script = place / "job.py"
    script.write_text(JOB)
    script.chmod(0o644)
    job = f"{PYTHON} {script} {base} {victim} {plant} {code}"
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SMSUPERVISE_TRAIN": job}
    result = subprocess.run(
        supervisor_argv(mode, "train"), capture_output=True, env=env, timeout=120, check=False
    )
    assert b"planted" in result.stdout, result.stderr.decode()[-3000:]
    return result.returncode, result.stderr, base, victim


def _untouched(victim: Path) -> None:
    assert victim.read_text() == "root's precious file"
    assert os.listdir(victim.parent) == ["precious"]
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


@pytest.mark.parametrize("plant", ["tmp", "final"])
def test_a_failure_never_writes_through_a_planted_link(mode: str, place: Path, plant: str) -> None:
    """Exit 3: root writes the failure text into a file of its own making; the victim keeps its
    bytes; a link at the final name is replaced by the real failure file, not followed."""
    code, err, base, victim = _run(mode, place, plant, 3)
    assert code == 3, err.decode()[-3000:]
    _untouched(victim)
    failure = base / "output" / "failure"
    assert stat.S_ISREG(failure.lstat().st_mode)
    assert failure.read_text().startswith("Training exited with code 3")
    assert "failure_written" in event_names(err)


@pytest.mark.parametrize("plant", ["tmp", "final"])
def test_a_success_never_truncates_through_a_planted_link(mode: str, place: Path, plant: str) -> None:
    """Exit 0: the empty success file is ours, the victim is not truncated."""
    code, err, base, victim = _run(mode, place, plant, 0)
    assert code == 0, err.decode()[-3000:]
    _untouched(victim)
    success = base / "output" / "success"
    assert stat.S_ISREG(success.lstat().st_mode)
    assert success.stat().st_size == 0


@pytest.mark.parametrize("code", [0, 3])
def test_an_output_dir_turned_into_a_link_is_not_followed(mode: str, place: Path, code: int) -> None:
    """The job replaces /opt/ml/output with its own link to another dir: nothing is written there,
    the exit code is the job's, and the event says why no outcome file was written."""
    status, err, _, victim = _run(mode, place, "outdir", code)
    assert status == code, err.decode()[-3000:]
    _untouched(victim)
    assert "outcome_not_written" in event_names(err)


def test_the_programs_own_failure_file_still_wins(mode: str, place: Path) -> None:
    """The negative twin: a regular failure file the job wrote (as its own user) is kept as it is."""
    code, err, base, victim = _run(mode, place, "own", 3)
    assert code == 3
    _untouched(victim)
    assert (base / "output" / "failure").read_text() == "the program's own words"
    assert "failure_kept" in event_names(err)
