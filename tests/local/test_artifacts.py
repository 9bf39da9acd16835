"""The archive writer: a streaming tar into a parallel gzip (pigz, or stdlib zlib in threads)."""

from __future__ import annotations

import gzip
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from smsupervise.local import artifacts


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def test_hosts_are_merged_byte_exact_and_the_last_host_wins(tmp_path: Path) -> None:
    """Two roots become one archive; a clash takes the later root's file; bytes survive exactly."""
    big = os.urandom(9 << 20)  # spans several 4 MiB gzip members
    _tree(tmp_path / "a", {"big.bin": big, "same.txt": b"from a", "a/only.txt": b"a"})
    _tree(tmp_path / "b", {"same.txt": b"from b", "b/empty": b""})
    (tmp_path / "a" / "link").symlink_to("big.bin")
    packed = artifacts.pack([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "m.tar.gz"))
    assert (packed.files, packed.bytes_in) == (4, len(big) + 6 + 1)
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
    artifacts.pack([str(tmp_path / "m")], str(tmp_path / "x.tar.gz"))
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


def _floats(size: int) -> bytes:
    """float32-like bytes: random mantissas, exponents from a narrow range (trained weights)."""
    data = bytearray(os.urandom(size))
    data[3::4] = bytes(0x3C + (b & 3) for b in data[3::4])
    return bytes(data)


@pytest.mark.parametrize(
    ("make", "coding"),
    [(os.urandom, "stored"), (_floats, "huffman"), (lambda n: b"step 1 loss 0.25\n" * (n // 17), "deflate")],
    ids=["random", "floats", "text"],
)
def test_each_kind_of_data_gets_its_cheapest_coding_and_survives(
    tmp_path: Path, make: Any, coding: str
) -> None:
    """Random bytes are stored, float weights Huffman-coded, text deflated (each kind alone is the
    negative twin of the others: its bytes take its coding, the other two get at most the segments
    holding tar headers and padding); all decompress byte-exact, and the archive is no bigger than
    ``gzip -6`` makes it, plus 1 %."""
    data = make(3 << 20)
    _tree(tmp_path / "m", {"w.bin": data})
    packed = artifacts.pack([str(tmp_path / "m")], str(tmp_path / "m.tar.gz"))
    assert packed.coded[coding] >= len(data) - artifacts.SEGMENT
    assert sum(packed.coded.values()) - packed.coded[coding] <= 2 * artifacts.SEGMENT
    with tarfile.open(tmp_path / "m.tar.gz") as archive:
        assert archive.extractfile("w.bin").read() == data  # type: ignore[union-attr]
    tar = subprocess.run(["tar", "cf", "-", "-C", str(tmp_path / "m"), "."], capture_output=True, check=True)
    reference = len(gzip.compress(tar.stdout, 6))
    assert packed.bytes_out <= reference * 1.01 + 1024


def test_a_mixed_block_codes_each_segment_apart(tmp_path: Path) -> None:
    """One 4 MiB block holding random bytes then text is cut into members by coding: the random
    part stored and the text deflated, not the whole block coded one way."""
    data = os.urandom(2 << 20) + b"epoch 3 accuracy 0.91\n" * ((2 << 20) // 22)
    _tree(tmp_path / "m", {"mixed.bin": data})
    packed = artifacts.pack([str(tmp_path / "m")], str(tmp_path / "m.tar.gz"))
    assert packed.coded["stored"] >= (2 << 20) - artifacts.SEGMENT
    assert packed.coded["deflate"] >= (2 << 20) - artifacts.SEGMENT
    assert packed.bytes_out < (2 << 20) + (256 << 10)  # the text shrank
    with gzip.open(tmp_path / "m.tar.gz") as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            assert archive.extractfile(member).read() == data  # type: ignore[union-attr]
