"""smsupervise-local run by root for a sudo caller (SUDO_UID/SUDO_GID) gives back only what the run
made, and runs only in a work dir it may give back: one owned by someone else, one holding entries
it did not make (root's files, other users' files, links), or a link itself, is refused before
anything is written, and nothing in it changes owner; links are never followed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from smsupervise.local import upload
from tests.local.conftest import LOCAL, needs_root, request

CALLER = 65534  # nobody: the sudo caller
OTHER = 4321  # another user of the machine

pytestmark = needs_root


def _run(tmp: Path, work: Path) -> subprocess.CompletedProcess[str]:
    body = request(tmp, "metrics")
    path = tmp / "job.json"
    path.write_bytes(orjson.dumps(body))
    env = {**os.environ, "SUDO_UID": str(CALLER), "SUDO_GID": str(CALLER)}
    return subprocess.run(
        [*LOCAL, "run", str(path), "--work-dir", str(work)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )


def _owners(root: Path) -> dict[str, int]:
    """Every entry under ``root`` (links not followed) and its owner."""
    found = {".": root.lstat().st_uid}
    for parent, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(parent, name)
            found[str(path.relative_to(root))] = path.lstat().st_uid
    return found


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    """A file of root's outside the work dir, which no give-back may touch."""
    path = tmp_path / "roots-file"
    path.write_text("root's")
    yield path
    assert path.stat().st_uid == 0
    assert path.read_text() == "root's"


def test_a_work_dir_owned_by_someone_else_is_refused(tmp_path: Path, victim: Path) -> None:
    """Another user's directory: refused naming its owner; nothing in it changes owner."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "theirs.txt").write_text("x")
    os.chown(work / "theirs.txt", OTHER, OTHER)
    os.chown(work, OTHER, OTHER)
    before = _owners(work)
    result = _run(tmp_path, work)
    assert result.returncode != 0, result.stderr
    assert f"owned by uid {OTHER}" in result.stderr
    assert _owners(work) == before
    del victim


@pytest.mark.parametrize(
    "entry", ["root's file", "another user's file", "a link to root's file", "a nested root file"]
)
def test_a_work_dir_holding_entries_the_run_did_not_make_is_refused(
    tmp_path: Path, victim: Path, entry: str
) -> None:
    """The caller's own directory, holding something that is not the caller's to be given: refused
    before anything is written; every owner stays as it was; the link's target is untouched."""
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, CALLER, CALLER)
    if entry == "root's file":
        (work / "planted").write_text("root's")
    elif entry == "another user's file":
        (work / "planted").write_text("theirs")
        os.chown(work / "planted", OTHER, OTHER)
    elif entry == "a link to root's file":
        (work / "planted").symlink_to(victim)
        os.lchown(work / "planted", CALLER, CALLER)
    else:
        (work / "logs").mkdir()
        os.chown(work / "logs", CALLER, CALLER)
        (work / "logs" / "planted").write_text("root's")
    before = _owners(work)
    result = _run(tmp_path, work)
    assert result.returncode != 0, result.stderr
    assert "--work-dir" in result.stderr
    assert _owners(work) == before
    assert not (work / "describe.json").exists()


def test_a_work_dir_that_is_a_link_is_refused(tmp_path: Path, victim: Path) -> None:
    """``--work-dir`` naming a link (to root's directory): refused, the directory untouched."""
    target = tmp_path / "roots-dir"
    target.mkdir()
    (tmp_path / "work").symlink_to(target)
    result = _run(tmp_path, tmp_path / "work")
    assert result.returncode != 0, result.stderr
    assert os.listdir(target) == []
    assert target.stat().st_uid == 0
    del victim


@pytest.mark.parametrize("premade", [False, True])
def test_what_the_run_made_goes_to_the_caller(tmp_path: Path, victim: Path, premade: bool) -> None:
    """The negative twin: a new work dir, or an empty one of the caller's: the run completes and
    every entry in it (links too, never followed) belongs to the caller."""
    work = tmp_path / "work"
    if premade:
        work.mkdir()
        os.chown(work, CALLER, CALLER)
    result = _run(tmp_path, work)
    assert result.returncode == 0, result.stderr
    owners = _owners(work)
    assert "describe.json" in owners
    assert set(owners.values()) == {CALLER}, {k: v for k, v in owners.items() if v != CALLER}
    del victim


def test_a_new_nested_work_dir_is_claimed_by_its_nearest_existing_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default work dir (``smsupervise-local/<name>``) does not exist yet, nor its parent: the
    nearest existing one is judged (root's here: allowed); one of another user's is refused."""
    monkeypatch.setenv("SUDO_UID", str(CALLER))
    monkeypatch.setenv("SUDO_GID", str(CALLER))
    upload.claim(str(tmp_path / "smsupervise-local" / "job-1"))
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, OTHER, OTHER)
    with pytest.raises(upload.WorkDirRefused, match=f"owned by uid {OTHER}"):
        upload.claim(str(theirs / "smsupervise-local" / "job-1"))
