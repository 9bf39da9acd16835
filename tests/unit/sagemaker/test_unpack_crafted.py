"""Crafted archives against ``sourcedir``: the PATH_MAX symlink-chain class (CVE-2025-4517) built
here (it writes outside the code dir through CPython 3.11.7's data filter and a realpath check),
links through links, limits and a stop; independent of tarfile's own filter."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from smsupervise.errors import ConfigError
from smsupervise.sagemaker import sourcedir

ENTRY = b"print('hi')\n"


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


def _sym(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _write(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"pwned\n") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _path_max_chain(depth: int = 16) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Long directory names behind a chain of symlinks: the resolved path passes PATH_MAX, where
    os.path.realpath (and so the data filter) stops resolving; 'escape' then points at <code>/..
    for the kernel while every lexical check sees a path inside."""
    comp, steps = "d" * 247, "abcdefghijklmnopqrstuvwxyz"[:depth]
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    here = ""
    for step in steps:
        members += [(_dir(os.path.join(here, comp)), None), (_sym(os.path.join(here, step), comp), None)]
        here = os.path.join(here, comp)
    linkpath = os.path.join(*steps, "l" * 254)
    members += [(_sym(linkpath, "../" * depth), None), (_sym("escape", linkpath + "/.."), None)]
    return [*members, _file("escape/pwned.txt"), _file("train.py", ENTRY)]


def _fetch(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], **limits: int) -> Path:
    code = tmp_path / "ml" / "code"
    code.mkdir(parents=True)
    archive = _write(tmp_path / "src.tar.gz", members)
    chosen = sourcedir.Limits()._replace(**limits)
    sourcedir.fetch(str(archive), str(code), "hyperparameters.json", chosen)
    return code


def _nothing_left(tmp_path: Path) -> None:
    assert not (tmp_path / "ml" / "pwned.txt").exists()
    assert sorted(os.listdir(tmp_path / "ml")) == ["code"]  # no staging dir left behind
    assert os.listdir(tmp_path / "ml" / "code") == []


def test_path_max_symlink_chain_is_refused_and_nothing_lands(tmp_path: Path) -> None:
    """The CVE-2025-4517 class: refused whole, nothing written outside or inside the code dir."""
    with pytest.raises(ConfigError) as raised:
        _fetch(tmp_path, _path_max_chain())
    assert "symlink" in raised.value.problem
    _nothing_left(tmp_path)


@pytest.mark.parametrize(
    ("members", "needle"),
    [
        ([(_sym("a", "."), None), (_sym("b", "a/a/a/../.."), None)], "another symlink"),
        ([(_sym("b", "x/../y"), None), (_sym("x", "deep"), None)], "earlier symlink"),
        ([(_sym("d", "sub"), None), _file("d/f.txt")], "through a symlink"),
        ([(_dir("sub"), None), (_sym("sub/up", "../.."), None)], "outside"),
        ([_file("f.txt"), (_sym("f.txt", "/etc/passwd"), None)], "absolute"),
    ],
)
def test_link_tricks_are_refused(tmp_path: Path, members: list, needle: str) -> None:  # type: ignore[type-arg]
    """Links through links, links placed where a target passes, members through a symlink, and
    links out are refused whole, whatever tarfile's filter would say."""
    with pytest.raises(ConfigError) as raised:
        _fetch(tmp_path, [_file("train.py", ENTRY), *members])
    assert raised.value.field == sourcedir.FIELD, needle
    _nothing_left(tmp_path)


def test_plain_archive_with_inside_links_unpacks(tmp_path: Path) -> None:
    """Negative twin: files, dirs, a symlink and a hard link inside the archive all unpack."""
    hard = tarfile.TarInfo("lib/same.py")
    hard.type, hard.linkname = tarfile.LNKTYPE, "lib/util.py"
    members = [
        _file("train.py", ENTRY),
        (_dir("lib"), None),
        _file("lib/util.py", b"X = 1\n"),
        (_sym("util.py", "lib/util.py"), None),
        (hard, None),
    ]
    code = _fetch(tmp_path, members)
    assert (code / "train.py").read_bytes() == ENTRY
    assert os.readlink(code / "util.py") == "lib/util.py"
    assert (code / "lib" / "same.py").read_bytes() == b"X = 1\n"
    assert sorted(os.listdir(tmp_path / "ml")) == ["code"]


@pytest.mark.parametrize(
    ("limits", "needle"), [({"max_members": 3}, "3 members"), ({"max_bytes": 100}, "100 bytes")]
)
def test_limits_stop_bombs_whole(tmp_path: Path, limits: dict[str, int], needle: str) -> None:
    """More members or bytes than the limits: refused whole with the limit named."""
    members = [_file(f"f{index}.txt", b"x" * 60) for index in range(5)]
    with pytest.raises(ConfigError) as raised:
        _fetch(tmp_path, members, **limits)
    assert needle in raised.value.problem
    _nothing_left(tmp_path)


def test_stop_between_members_leaves_nothing(tmp_path: Path) -> None:
    """A stop asked for during the unpack ends it between members and removes what was written."""
    code = tmp_path / "ml" / "code"
    code.mkdir(parents=True)
    archive = _write(tmp_path / "src.tar.gz", [_file(f"f{index}.txt") for index in range(10)])
    seen = []

    def should_stop() -> bool:
        seen.append(1)
        return len(seen) > 3

    with pytest.raises(sourcedir.Stopped):
        sourcedir.fetch(str(archive), str(code), "hp.json", sourcedir.Limits(1 << 30, 1000), should_stop)
    _nothing_left(tmp_path)
