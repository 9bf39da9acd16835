"""The source directory: hostile tarballs are refused whole, nothing lands outside the code dir."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

from smsupervise.errors import ConfigError
from smsupervise.sagemaker import sourcedir


def _tarball(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        archive.addfile(_file("ok.py"), io.BytesIO(b"print('ok')\n"))
        for member in members:
            data = io.BytesIO(b"evil\n") if member.isfile() else None
            archive.addfile(member, data)
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(b"print('ok')\n") if name == "ok.py" else 5
    return info


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


HOSTILE = {
    "dot-dot": lambda: _file("../escaped.txt"),
    "absolute": lambda: _file("/tmp/smsupervise-absolute-escape.txt"),
    "symlink-out": lambda: _link("link", "/etc", tarfile.SYMTYPE),
    "symlink-climbs": lambda: _link("sub/link", "../../outside", tarfile.SYMTYPE),
    "hardlink-out": lambda: _link("hard", "/etc/passwd", tarfile.LNKTYPE),
    "device": lambda: _device("null"),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_tarball_is_refused_and_nothing_is_written(tmp_path: Path, kind: str) -> None:
    """A tarball with one hostile member is refused with a clear error; the code dir stays empty
    and nothing appears beside it."""
    code = tmp_path / "ml" / "code"
    code.mkdir(parents=True)  # as in a job: the code dir exists and is empty
    tarball = _tarball(tmp_path / "src.tar.gz", HOSTILE[kind]())
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError) as raised:
        sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    assert "nothing was unpacked" in raised.value.message()
    assert list(code.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not Path("/tmp/smsupervise-absolute-escape.txt").exists()


def test_a_clean_tarball_unpacks(tmp_path: Path) -> None:
    """The negative twin: the same archive without the hostile member unpacks into the code dir."""
    code = tmp_path / "code"
    tarball = _tarball(tmp_path / "src.tar.gz", _link("inner", "ok.py", tarfile.SYMTYPE))
    sourcedir.fetch(f"file://{tarball}", str(code), "hyperparameters.json")
    assert (code / "ok.py").read_text() == "print('ok')\n"
    assert (code / "inner").resolve() == (code / "ok.py").resolve()


def test_a_non_empty_code_dir_is_kept(tmp_path: Path) -> None:
    """Like the toolkit: code already in place is not overwritten."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "mine.py").write_text("x")
    assert sourcedir.fetch(str(_tarball(tmp_path / "s.tar.gz")), str(code), "h").startswith("kept")
    assert sorted(p.name for p in code.iterdir()) == ["mine.py"]


def test_s3_without_boto3_says_how_to_fix_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An s3:// source without boto3 (its import blocked here) is a clear configuration error
    naming the extra, not an ImportError; nothing is left beside the code dir."""
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` raises ImportError
    with pytest.raises(ConfigError) as raised:
        sourcedir.fetch("s3://bucket/key.tar.gz", str(tmp_path / "code"), "hyperparameters.json")
    assert "s3://bucket/key.tar.gz is on S3 but boto3 is not installed" in raised.value.message()
    assert "smsupervise[s3]" in raised.value.message()
    assert list(tmp_path.iterdir()) == []


def test_an_s3_uri_without_a_key_is_refused(tmp_path: Path) -> None:
    """``s3://bucket`` alone names no object: a configuration error saying so, before any import."""
    with pytest.raises(ConfigError) as raised:
        sourcedir.fetch("s3://bucket", str(tmp_path / "code"), "hyperparameters.json")
    assert "'s3://bucket' is not s3://bucket/key" in raised.value.message()


# -- member by member, all or nothing (issue 11) ----------------------------------------------------


def _raw_tarball(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    """An archive of exactly ``members`` (regular files get ``data[name]``, else b"evil\\n")."""
    data = data or {}
    with tarfile.open(path, "w") as archive:
        for member in members:
            if member.isreg():
                body = data.get(member.name, b"evil\n")
                member.size = len(body)
                archive.addfile(member, io.BytesIO(body))
            else:
                archive.addfile(member)
    return path


def _dir(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info


def _pathmax_chain() -> list[tarfile.TarInfo]:
    """The published CVE-2025-4517 proof of concept's shape: 16 dirs of 247-character names, each
    with a one-letter symlink alias; a link with a 254-character name reached through the aliases
    climbs back to the root (its resolved path is past PATH_MAX, so realpath stops resolving it and
    takes it for a directory); ``escape`` points one level above it, and a file is written through
    ``escape``: on names alone everything stays inside, on the kernel's walk it lands outside."""
    comp, steps, path = "d" * 247, "abcdefghijklmnop", ""
    members: list[tarfile.TarInfo] = []
    for step in steps:
        members.append(_dir(f"{path}{comp}"))
        members.append(_link(f"{path}{step}", comp, tarfile.SYMTYPE))
        path += comp + "/"
    climber = "/".join(steps) + "/" + "l" * 254
    members.append(_link(climber, "../" * len(steps), tarfile.SYMTYPE))
    members.append(_link("escape", climber + "/..", tarfile.SYMTYPE))
    members.append(_file("escape/pwned.txt"))
    return members


def _job_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A base dir with an empty code dir, as in a job; returns (base, code)."""
    base = tmp_path / "ml"
    (base / "code").mkdir(parents=True)
    return base, base / "code"


def _assert_nothing_left(base: Path, code: Path) -> None:
    assert list(code.iterdir()) == []
    assert sorted(p.name for p in base.iterdir()) == ["code"]


def test_the_pathmax_symlink_chain_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    """The CVE-2025-4517 class: links chained until the resolved path passes PATH_MAX are refused
    whole, on every Python, and nothing lands outside the code dir."""
    base, code = _job_tree(tmp_path)
    tarball = _raw_tarball(tmp_path / "chain.tar", _pathmax_chain())
    with pytest.raises(ConfigError) as raised:
        sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    assert "nothing was unpacked" in raised.value.message()
    assert not (base / "pwned.txt").exists()
    assert not (tmp_path / "pwned.txt").exists()
    _assert_nothing_left(base, code)


def _through_a_link() -> list[tarfile.TarInfo]:
    """``s`` -> ``.`` is inside; ``t`` -> ``s/..`` looks inside on names but is the parent really;
    then a file is written through ``t``."""
    return [
        _file("ok.py"),
        _link("s", ".", tarfile.SYMTYPE),
        _link("t", "s/..", tarfile.SYMTYPE),
        _file("t/pwned"),
    ]


def test_a_symlink_then_a_file_written_through_it_is_refused(tmp_path: Path) -> None:
    """A link whose target passes through another link, and a file written through it, are refused
    whole: nothing outside, nothing in the code dir, nothing beside it."""
    base, code = _job_tree(tmp_path)
    tarball = _raw_tarball(tmp_path / "through.tar", _through_a_link())
    with pytest.raises(ConfigError):
        sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    assert not (base / "pwned").exists()
    _assert_nothing_left(base, code)


def test_a_hard_link_to_outside_through_a_symlink_is_refused(tmp_path: Path) -> None:
    """A hard link whose source goes out through a symlink of the archive is refused whole; the
    file outside is neither linked nor changed."""
    base, code = _job_tree(tmp_path)
    secret = base / "secret"
    secret.write_text("mine")
    members = [_file("ok.py"), _link("s", ".", tarfile.SYMTYPE), _link("h", "s/../secret", tarfile.LNKTYPE)]
    with pytest.raises(ConfigError):
        sourcedir.fetch(str(_raw_tarball(tmp_path / "h.tar", members)), str(code), "hyperparameters.json")
    assert secret.stat().st_nlink == 1
    secret.unlink()
    _assert_nothing_left(base, code)


def test_a_refused_archive_leaves_nothing_and_a_rerun_refuses_again(tmp_path: Path) -> None:
    """All or nothing: an archive refused half-way leaves no half archive, so a second run on the
    same tree refuses it again instead of running what the first one left."""
    base, code = _job_tree(tmp_path)
    tarball = _raw_tarball(tmp_path / "half.tar", _through_a_link())
    for _ in range(2):
        with pytest.raises(ConfigError):
            sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
        _assert_nothing_left(base, code)


def test_setuid_setgid_and_sticky_bits_are_dropped(tmp_path: Path) -> None:
    """Modes keep 0o755 at most: a setuid/setgid file and a sticky world-writable dir lose the bits."""
    _, code = _job_tree(tmp_path)
    run = _file("run.sh")
    run.mode = 0o6777
    members = [_dir("shared", 0o1777), run]
    sourcedir.fetch(str(_raw_tarball(tmp_path / "m.tar", members)), str(code), "hyperparameters.json")
    assert (code / "run.sh").stat().st_mode & 0o7777 == 0o755
    assert (code / "shared").stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize("limit", ["members", "bytes"])
def test_limits_refuse_the_whole_archive_and_name_the_option(tmp_path: Path, limit: str) -> None:
    """More members or bytes than the limits: refused whole, with the file, the field and the option."""
    base, code = _job_tree(tmp_path)
    members = [_file(f"f{i}.txt") for i in range(10)]
    tarball = _raw_tarball(tmp_path / "bomb.tar", members, {f"f{i}.txt": b"x" * 1000 for i in range(10)})
    limits = sourcedir.Limits(max_members=5) if limit == "members" else sourcedir.Limits(max_bytes=5000)
    with pytest.raises(ConfigError) as raised:
        sourcedir.fetch(str(tarball), str(code), "hyperparameters.json", limits)
    text = raised.value.message()
    assert "hyperparameters.json" in text
    assert "sagemaker_submit_directory" in text
    assert f"--source-max-{limit}" in text
    _assert_nothing_left(base, code)


def test_a_stop_during_the_unpack_leaves_nothing(tmp_path: Path) -> None:
    """``should_stop`` is asked between members: once it says yes, ``Stopped`` and nothing behind."""
    base, code = _job_tree(tmp_path)
    tarball = _raw_tarball(tmp_path / "many.tar", [_file(f"f{i}.txt") for i in range(20)])
    asked: list[int] = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 5

    with pytest.raises(sourcedir.Stopped):
        sourcedir.fetch(str(tarball), str(code), "hyperparameters.json", should_stop=should_stop)
    _assert_nothing_left(base, code)


def test_a_clean_archive_with_links_inside_extracts_exactly(tmp_path: Path) -> None:
    """The negative twin: dirs, files, relative symlinks that stay inside and a hard link to an
    earlier file come out exactly, with their modes."""
    base, code = _job_tree(tmp_path)
    tool = _file("lib/v1/tool.py")
    tool.mode = 0o755
    members = [
        _dir("lib"),
        _dir("lib/v1", 0o750),
        tool,
        _link("lib/current", "v1", tarfile.SYMTYPE),
        _dir("bin"),
        _link("bin/tool", "../lib/v1/tool.py", tarfile.SYMTYPE),
        _file("ok.py"),
        _link("same.py", "ok.py", tarfile.LNKTYPE),
    ]
    data = {"ok.py": b"print('ok')\n", "lib/v1/tool.py": b"#!/bin/sh\n"}
    sourcedir.fetch(str(_raw_tarball(tmp_path / "clean.tar", members, data)), str(code), "h")
    assert (code / "ok.py").read_bytes() == b"print('ok')\n"
    assert (code / "same.py").samefile(code / "ok.py")
    assert (code / "bin" / "tool").readlink() == Path("../lib/v1/tool.py")
    assert (code / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert (code / "lib" / "current").readlink() == Path("v1")
    assert (code / "lib" / "v1" / "tool.py").stat().st_mode & 0o777 == 0o755
    assert (code / "lib" / "v1").stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in base.iterdir()) == ["code"]


def test_a_partial_download_left_by_a_killed_run_is_removed(tmp_path: Path) -> None:
    """A run SIGKILLed mid-download leaves its ``.tar.part`` file (and a downloaded ``.tar``): the
    next fetch removes both; a file of the user's beside the code dir stays."""
    base, code = _job_tree(tmp_path)
    (base / ".smsupervise-source-0123456789ab.tar.part").write_bytes(b"half an archive")
    (base / ".smsupervise-source-ba9876543210.tar").write_bytes(b"a whole one")
    (base / "mine.txt").write_text("kept")
    tarball = _raw_tarball(tmp_path / "ok.tar", [_file("ok.py")], {"ok.py": b"print('ok')\n"})
    sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    assert sorted(p.name for p in base.iterdir()) == ["code", "mine.txt"]
    assert sorted(p.name for p in code.iterdir()) == ["ok.py"]


def test_a_staging_dir_left_by_a_killed_run_is_removed_and_the_source_unpacked_whole(tmp_path: Path) -> None:
    """A run SIGKILLed mid-unpack leaves its staging dir: the next run removes it and unpacks afresh."""
    base, code = _job_tree(tmp_path)
    leftover = base / ".smsupervise-source-0123456789ab"
    leftover.mkdir()
    (leftover / "half.py").write_text("half")
    tarball = _raw_tarball(tmp_path / "ok.tar", [_file("ok.py")], {"ok.py": b"print('ok')\n"})
    sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    assert sorted(p.name for p in base.iterdir()) == ["code"]
    assert sorted(p.name for p in code.iterdir()) == ["ok.py"]
