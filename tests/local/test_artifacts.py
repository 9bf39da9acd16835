"""The archive writer: a streaming tar into a parallel gzip (pigz, or stdlib zlib in threads)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from smsupervise.local import artifacts

COMPRESSORS = [
    "threads",
    pytest.param("pigz", marks=pytest.mark.skipif(not shutil.which("pigz"), reason="no pigz")),
]


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_hosts_are_merged_byte_exact_and_the_last_host_wins(tmp_path: Path, compressor: str) -> None:
    """Two roots become one archive; a clash takes the later root's file; bytes survive exactly."""
    big = os.urandom(9 << 20)  # spans several 4 MiB gzip members
    _tree(tmp_path / "a", {"big.bin": big, "same.txt": b"from a", "a/only.txt": b"a"})
    _tree(tmp_path / "b", {"same.txt": b"from b", "b/empty": b""})
    (tmp_path / "a" / "link").symlink_to("big.bin")
    packed = artifacts.pack(
        [str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "m.tar.gz"), compressor=compressor
    )  # type: ignore[arg-type]
    assert (packed.compressor, packed.files, packed.bytes_in) == (compressor, 4, len(big) + 6 + 1)
    assert subprocess.run(["gzip", "-t", str(tmp_path / "m.tar.gz")], check=False).returncode == 0
    with tarfile.open(tmp_path / "m.tar.gz") as archive:
        assert archive.getnames() == ["a", "a/only.txt", "b", "b/empty", "big.bin", "link", "same.txt"]
        assert archive.extractfile("big.bin").read() == big  # type: ignore[union-attr]
        assert archive.extractfile("same.txt").read() == b"from b"  # type: ignore[union-attr]
        assert archive.getmember("link").issym()
    assert not (tmp_path / "m.tar.gz.part").exists()


def test_the_threaded_gzip_is_many_members_the_stdlib_reads_as_one(tmp_path: Path) -> None:
    """Independent gzip members (one per 4 MiB block) decompress as one stream with gzip.open."""
    data = os.urandom(1 << 20) * 10
    _tree(tmp_path / "m", {"x": data})
    artifacts.pack([str(tmp_path / "m")], str(tmp_path / "x.tar.gz"), compressor="threads")
    raw = (tmp_path / "x.tar.gz").read_bytes()
    assert raw.count(b"\x1f\x8b\x08") >= 3  # several members (a header each)
    with gzip.open(tmp_path / "x.tar.gz") as stream:
        assert len(stream.read()) % tarfile.RECORDSIZE == 0


def test_an_empty_model_dir_is_a_valid_empty_archive(tmp_path: Path) -> None:
    """No files: still a valid tar.gz with no members."""
    (tmp_path / "empty").mkdir()
    packed = artifacts.pack([str(tmp_path / "empty")], str(tmp_path / "e.tar.gz"))
    assert packed.files == 0
    with tarfile.open(tmp_path / "e.tar.gz") as archive:
        assert archive.getnames() == []
