"""The source directory: hostile tarballs are refused whole, nothing lands outside the code dir."""

from __future__ import annotations

import io
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


def test_s3_without_boto3_says_how_to_fix_it(tmp_path: Path) -> None:
    """An s3:// source without boto3 is a clear configuration error, not an ImportError."""
    pytest.importorskip("smsupervise")
    try:
        import boto3  # type: ignore[import-not-found]  # noqa: F401

        pytest.skip("boto3 is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigError) as raised:
        sourcedir.fetch("s3://bucket/key.tar.gz", str(tmp_path / "code"), "hyperparameters.json")
    assert "smsupervise[s3]" in raised.value.message()
