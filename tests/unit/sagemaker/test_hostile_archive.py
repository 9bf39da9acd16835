"""Archives crafted against tarfile itself (issue 29): headers that older tarfiles mis-read (a
negative size, a bad checksum, a header that does not advance), PAX values of every shape, chains
of extended headers, sparse members. Each is refused or unpacked, with ``view`` and ``fetch``,
never a hang, a crash or an unbounded read; a plain archive of the same members still unpacks.

CPython 3.11.7 (this machine) loops for ever on a negative size (CVE-2025-8194 is fixed only in
later releases): the checks are ours, so they hold on every Python the README supports."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsupervise.errors import ConfigError
from smsupervise.sagemaker import archive, sourcedir, unpack
from smsupervise.sagemaker.removal import remove_tree

BODY = b"print('hi')\n"
pytestmark = pytest.mark.timeout(120)  # a hang detector: the old code loops for ever on these


def _block(info: tarfile.TarInfo, fmt: int = tarfile.GNU_FORMAT) -> bytearray:
    return bytearray(info.tobuf(fmt, tarfile.ENCODING, "surrogateescape"))


def _checksum(block: bytearray) -> bytearray:
    """The header's checksum recomputed over the last 512-byte block (after a patch)."""
    head = len(block) - 512
    block[head + 148 : head + 156] = b" " * 8
    block[head + 148 : head + 156] = b"%06o\0 " % sum(block[head : head + 512])
    return block


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def _entry(name: str = "train.py") -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(BODY)
    return bytes(_block(info)) + _padded(BODY)


def _base256(value: int) -> bytes:
    """A 12-byte GNU base-256 number (what nti reads as negative when the first byte is 0xff)."""
    return bytes([0xFF if value < 0 else 0x80]) + (value & ((1 << 88) - 1)).to_bytes(11, "big")


def _negative_size(size: int) -> bytes:
    info = tarfile.TarInfo("neg.bin")
    block = _block(info)
    block[124:136] = _base256(size)
    return bytes(_checksum(block))


def _pax_size(size: str) -> bytes:
    info = tarfile.TarInfo("neg.bin")
    info.pax_headers = {"size": size}
    return bytes(_block(info, tarfile.PAX_FORMAT))


END = b"\0" * 1024


def _write(tmp_path: Path, raw: bytes, compress: bool = False) -> Path:
    path = tmp_path / ("src.tar.gz" if compress else "src.tar")
    path.write_bytes(gzip.compress(raw, 1) if compress else raw)
    return path


def _tree(tmp_path: Path) -> Path:
    code = tmp_path / "ml" / "code"
    code.mkdir(parents=True)
    return code


def _nothing_left(tmp_path: Path) -> None:
    assert sorted(os.listdir(tmp_path / "ml")) == ["code"]
    assert os.listdir(tmp_path / "ml" / "code") == []


def _refused_by_view_and_fetch(tmp_path: Path, tarball: Path, needle: str) -> ConfigError:
    code = _tree(tmp_path)
    with pytest.raises(ConfigError) as viewed:
        sourcedir.view(str(tarball), str(code))
    with pytest.raises(ConfigError) as fetched:
        sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    for error in (viewed.value, fetched.value):
        assert error.field == "sagemaker_submit_directory"
        assert needle in error.problem, error.message()
        assert "nothing was unpacked" in error.problem
        assert error.hint  # the fix
    _nothing_left(tmp_path)
    return fetched.value


def _extended_negative(kind: bytes) -> bytes:
    """A GNU long name or a PAX global header whose own size is negative (tarfile reads "all")."""
    info = tarfile.TarInfo("././@LongLink")
    info.type = kind
    block = _block(info, tarfile.USTAR_FORMAT if kind == tarfile.XGLTYPE else tarfile.GNU_FORMAT)
    block[124:136] = _base256(-1024)
    return bytes(_checksum(block))


NEGATIVE = {
    "base256-512": _entry() + _negative_size(-512),
    "base256-1": _entry() + _negative_size(-1),
    "base256-huge": _entry() + _negative_size(-(1 << 40)),
    "pax-512": _entry() + _pax_size("-512"),
    "pax-1": _entry() + _pax_size("-1"),
    "first-member": _negative_size(-512) + _entry(),
    "first-pax": _pax_size("-512") + _entry(),
    "gnu-longname": _entry() + _extended_negative(tarfile.GNUTYPE_LONGNAME) + _entry("x.py"),
    "pax-global": _entry() + _extended_negative(tarfile.XGLTYPE) + _entry("x.py"),
}


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
@pytest.mark.parametrize("raw", list(NEGATIVE.values()), ids=list(NEGATIVE))
def test_a_negative_size_is_refused_not_looped_on(tmp_path: Path, raw: bytes, compress: bool) -> None:
    """The 2 KiB archive that hangs tarfile < the CVE-2025-8194 fix (the same header read again and
    again, memory growing), and the same size in every header that has one (the member's, first
    or not, a PAX size, a GNU long name's, a PAX global header's): refused at once by the plan's
    look and by the fetch."""
    tarball = _write(tmp_path, raw + END, compress)
    _refused_by_view_and_fetch(tmp_path, tarball, "negative size")


def test_the_same_archive_with_a_real_size_unpacks(tmp_path: Path) -> None:
    """The twin: the member with a size of 0 (and a PAX size that is a real number) unpacks."""
    info = tarfile.TarInfo("empty.bin")
    pax = tarfile.TarInfo("pax.bin")
    pax.pax_headers = {"size": "0"}
    tarball = _write(tmp_path, _entry() + bytes(_block(info)) + bytes(_block(pax, tarfile.PAX_FORMAT)) + END)
    code = _tree(tmp_path)
    assert sourcedir.view(str(tarball), str(code)).names == {"train.py", "empty.bin", "pax.bin"}
    assert sourcedir.fetch(str(tarball), str(code), "hyperparameters.json") == f"unpacked {tarball}"
    assert sorted(os.listdir(code)) == ["empty.bin", "pax.bin", "train.py"]
    assert (code / "train.py").read_bytes() == BODY


def _bad_checksum() -> bytes:
    info = tarfile.TarInfo("hidden.py")
    info.size = 4
    block = _block(info)
    block[148:156] = b"0000000\0"
    return bytes(block) + _padded(b"x=1\n")


def test_a_header_with_a_bad_checksum_after_the_first_is_refused(tmp_path: Path) -> None:
    """tarfile takes a bad header after the first for the end of the archive and drops the rest
    silently: refused, naming where it is."""
    tarball = _write(tmp_path, _entry() + _bad_checksum() + END)
    _refused_by_view_and_fetch(tmp_path, tarball, "header at byte 1024 cannot be read")


def test_a_truncated_archive_is_refused(tmp_path: Path) -> None:
    """Half a header at the end: the same class (tarfile stops there without a word)."""
    tarball = _write(tmp_path, _entry() + _bad_checksum()[:100])
    _refused_by_view_and_fetch(tmp_path, tarball, "header at byte 1024 cannot be read")


@pytest.mark.parametrize(
    "tail", [b"", END, END + b"\0" * 8192, END + b"junk after the end"], ids=["none", "two", "padded", "junk"]
)
def test_ends_that_tar_writes_are_accepted(tmp_path: Path, tail: bytes) -> None:
    """The twins: no end marker, the two zero blocks, a record's zero padding, and whatever follows
    the end marker (GNU tar stops there too) all unpack."""
    tarball = _write(tmp_path, _entry() + tail)
    code = _tree(tmp_path)
    sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    assert (code / "train.py").read_bytes() == BODY


def _record(keyword: str, value: str) -> bytes:
    """One PAX record, ``"<length> <keyword>=<value>\\n"``, its length counting its own digits."""
    body = f" {keyword}={value}\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return f"{length}{body}".encode()


def _chain(count: int) -> bytes:
    """``count`` PAX extended headers in a row before one member: tarfile recurses once per header."""
    raw = b""
    for index in range(count):
        record = _record("comment", str(index))
        head = tarfile.TarInfo(f"PaxHeader{index}")
        head.type, head.size = tarfile.XHDTYPE, len(record)
        raw += bytes(_block(head, tarfile.USTAR_FORMAT)) + _padded(record)
    return raw + _entry()


def test_a_long_chain_of_extended_headers_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    """2000 extended headers in a row recurse in tarfile past Python's limit (RecursionError, exit 70):
    refused once the chain is longer than any tar writes."""
    tarball = _write(tmp_path, _chain(2000) + END)
    _refused_by_view_and_fetch(tmp_path, tarball, "extended headers")


def test_a_few_extended_headers_in_a_row_unpack(tmp_path: Path) -> None:
    """The twin: a handful of extended headers before a member is a plain archive."""
    tarball = _write(tmp_path, _chain(3) + END)
    code = _tree(tmp_path)
    sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    assert (code / "train.py").read_bytes() == BODY


def test_an_extended_header_claiming_gigabytes_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A PAX header that says it is 8 GiB long: tarfile would read it whole into memory (a gzip bomb
    of zeros makes that real); refused before the read."""
    head = tarfile.TarInfo("././@PaxHeader")
    head.type, head.size = tarfile.XHDTYPE, 1 << 33
    block = _block(head, tarfile.GNU_FORMAT)
    tarball = _write(tmp_path, _entry() + bytes(block) + b"\0" * (1 << 20), compress=True)
    _refused_by_view_and_fetch(tmp_path, tarball, "header")


def test_a_sparse_member_is_refused(tmp_path: Path) -> None:
    """A GNU sparse member (a map of holes tarfile expands on read) has no place in a source tree."""
    info = tarfile.TarInfo("holes.bin")
    info.type = tarfile.GNUTYPE_SPARSE
    block = _block(info)
    tarball = _write(tmp_path, _entry() + bytes(_checksum(block)) + END)
    _refused_by_view_and_fetch(tmp_path, tarball, "sparse")


def test_view_asks_the_stop_and_stops(tmp_path: Path) -> None:
    """Planning looks into the archive: a stop asked for meanwhile ends the look (``Stopped``)."""
    tarball = _write(tmp_path, _entry() * 1 + END)
    with pytest.raises(sourcedir.Stopped):
        sourcedir.view(str(tarball), str(_tree(tmp_path)), should_stop=lambda: True)


def test_view_keeps_to_the_member_limit(tmp_path: Path) -> None:
    """The plan's look is bounded like the fetch: more members than the limit is refused there."""
    tarball = tmp_path / "many.tar"
    with tarfile.open(tarball, "w") as archive:
        for index in range(5):
            info = tarfile.TarInfo(f"f{index}.py")
            info.size = len(BODY)
            archive.addfile(info, io.BytesIO(BODY))
    with pytest.raises(ConfigError) as raised:
        sourcedir.view(str(tarball), str(_tree(tmp_path)), limits=sourcedir.Limits(max_members=3))
    assert "--source-max-members" in raised.value.hint


PAX_FIELDS = [
    "mtime",
    "atime",
    "ctime",
    "size",
    "uid",
    "gid",
    "uname",
    "gname",
    "path",
    "linkpath",
    "comment",
]
PAX_NUMBERS = st.one_of(
    st.sampled_from(["1e400", "-1e400", "nan", "-nan", "inf", "-inf", "-1e20", "1e20", "-0", "0x10", ""]),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.dictionaries(st.sampled_from(PAX_FIELDS), PAX_NUMBERS, min_size=1, max_size=4))
def test_any_pax_header_is_unpacked_or_refused_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, headers: dict[str, str]
) -> None:
    """The class behind PAX ``mtime=1e400`` (OverflowError from os.utime, exit 70): every PAX field
    tarfile reads, with numbers out of range, NaN, infinities, huge integers and text. ``view`` and
    ``fetch`` either unpack (a time out of range is clamped) or refuse with our error; never
    anything else, never a hang."""
    tmp_path = tmp_path_factory.mktemp("pax")
    info = tarfile.TarInfo("train.py")
    info.size = len(BODY)
    info.pax_headers = dict(headers)
    try:
        raw = bytes(_block(info, tarfile.PAX_FORMAT)) + _padded(BODY)
    except (ValueError, UnicodeError):
        return  # tarfile cannot even write it
    tarball = _write(tmp_path, _entry("first.py") + raw + END)
    code = _tree(tmp_path)
    refused: ConfigError | None = None
    try:
        sourcedir.view(str(tarball), str(code))
        sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    except ConfigError as error:
        refused = error
    if refused is not None:
        assert refused.field == "sagemaker_submit_directory"
        _nothing_left(tmp_path)
        return
    for name in os.listdir(code):
        os.lstat(code / name)  # whatever landed is a plain entry with a valid time


@pytest.mark.parametrize("mtime", ["1e400", "nan", "-1e20", "inf", "-inf", "9" * 40, "-" + "9" * 40])
def test_a_pax_mtime_out_of_range_is_clamped(tmp_path: Path, mtime: str) -> None:
    """The examples of the class: the file unpacks, its time within what the kernel keeps."""
    info = tarfile.TarInfo("train.py")
    info.size = len(BODY)
    info.pax_headers = {"mtime": mtime}
    tarball = tmp_path / "t.tar"
    with tarfile.open(tarball, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(info, io.BytesIO(BODY))
    code = _tree(tmp_path)
    done = sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    assert (code / "train.py").read_bytes() == BODY
    assert unpack.MIN_TIME <= (code / "train.py").stat().st_mtime <= unpack.MAX_TIME
    assert "1 file times out of range" in done  # said in the source_ready event


# -- cleanup of a deep tree (issue 29): never recursion per level -------------------------------------

DEEP = 3 * sys.getrecursionlimit()  # far past what a recursive removal survives


@pytest.fixture(autouse=True)
def _no_deep_leftovers(tmp_path: Path) -> Iterator[None]:
    """Whatever a test leaves is removed here (pytest's own cleanup is shutil.rmtree: recursive)."""
    yield
    remove_tree(str(tmp_path))


def _deep_archive(tmp_path: Path, depth: int, last: tarfile.TarInfo, last_data: bytes) -> Path:
    """train.py, a file ``depth`` directories deep (the directories made on the way), then ``last``."""
    tarball = tmp_path / "deep.tar"
    with tarfile.open(tarball, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(_info("train.py", BODY), io.BytesIO(BODY))
        archive.addfile(_info("d/" * depth + "f.txt", b"x"), io.BytesIO(b"x"))
        archive.addfile(last, io.BytesIO(last_data))
    return tarball


def _info(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


def test_a_deep_tree_then_a_refusal_is_removed_without_recursion(tmp_path: Path) -> None:
    """A member thousands of directories deep, then one the kernel refuses (a 300-byte name):
    refused (exit 2), and the half-unpacked staging dir is removed whole (a recursive rmtree dies
    with RecursionError there, exit 70, and leaves it)."""
    tarball = _deep_archive(tmp_path, DEEP, _info("n" * 300, b"y"), b"y")
    code = _tree(tmp_path)
    with pytest.raises(ConfigError) as raised:
        sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    assert "could not be unpacked" in raised.value.problem
    _nothing_left(tmp_path)


def test_a_deep_tree_then_a_stop_is_removed_without_recursion(tmp_path: Path) -> None:
    """The same with a stop asked for once the deep member is in: ``Stopped``, nothing left."""
    tarball = _deep_archive(tmp_path, DEEP, _info("last.txt", b"y"), b"y")
    code = _tree(tmp_path)
    deep_in = [False]

    def should_stop() -> bool:
        staging = [p for p in (tmp_path / "ml").iterdir() if p.name.startswith(sourcedir.STAGING)]
        deep_in[0] = deep_in[0] or bool(staging and (staging[0] / "d").exists())
        return deep_in[0]

    with pytest.raises(sourcedir.Stopped):
        sourcedir.fetch(str(tarball), str(code), "hyperparameters.json", should_stop=should_stop)
    _nothing_left(tmp_path)


def _leave_deep_staging(holder: Path, depth: int) -> Path:
    """What a run killed mid-unpack leaves: a staging dir ``depth`` levels deep, made by fds."""
    staging = holder / f"{sourcedir.STAGING}0123456789ab"
    staging.mkdir()
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return staging


def test_the_next_run_removes_a_deep_leftover_and_unpacks(tmp_path: Path) -> None:
    """The run after: a deep staging dir left behind is removed (no RecursionError) and the
    source is unpacked whole."""
    code = _tree(tmp_path)
    _leave_deep_staging(tmp_path / "ml", DEEP)
    tarball = _write(tmp_path, _entry() + END)
    sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    assert sorted(os.listdir(tmp_path / "ml")) == ["code"]
    assert (code / "train.py").read_bytes() == BODY


def test_removal_never_follows_a_symlink_out(tmp_path: Path) -> None:
    """The twin that must stay: a leftover holding symlinks to a directory outside (and to a file)
    loses the links, never what they point at."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep.txt").write_text("mine")
    code = _tree(tmp_path)
    staging = _leave_deep_staging(tmp_path / "ml", 5)
    (staging / "d" / "out").symlink_to(outside)
    (staging / "d" / "d" / "file").symlink_to(outside / "keep.txt")
    sourcedir.fetch(str(_write(tmp_path, _entry() + END)), str(code), "hyperparameters.json")
    assert sorted(os.listdir(tmp_path / "ml")) == ["code"]
    assert (outside / "keep.txt").read_text() == "mine"
    assert (outside / "sub").is_dir()


def _deep_dir(root: Path, depth: int) -> Path:
    """A local source dir: train.py, and a file ``depth`` directories down (made by fds)."""
    root.mkdir()
    (root / "train.py").write_bytes(BODY)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("f.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return root


def test_a_local_source_deeper_than_the_recursion_limit_is_copied(tmp_path: Path) -> None:
    """A local source directory past the recursion limit (shutil.copytree recursed once per
    level: RecursionError, exit 70) is copied whole."""
    depth = sys.getrecursionlimit() + 200
    source = _deep_dir(tmp_path / "src", depth)
    code = _tree(tmp_path)
    sourcedir.fetch(str(source), str(code), "hyperparameters.json")
    assert (code / "train.py").read_bytes() == BODY
    assert (code / ("d/" * depth + "f.txt")).is_file()
    assert sorted(os.listdir(tmp_path / "ml")) == ["code"]


def test_a_local_source_past_path_max_is_refused_whole(tmp_path: Path) -> None:
    """Deeper still, past PATH_MAX: refused naming the field and the fix, nothing left behind."""
    source = _deep_dir(tmp_path / "src", 2100)  # 4200 characters of path
    code = _tree(tmp_path)
    with pytest.raises(ConfigError) as raised:
        sourcedir.fetch(str(source), str(code), "hyperparameters.json")
    assert raised.value.field == "sagemaker_submit_directory"
    assert "could not be copied" in raised.value.problem
    _nothing_left(tmp_path)


def test_a_fifo_in_a_local_source_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A FIFO in the source dir (copying it would block on open): refused, naming it."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_bytes(BODY)
    os.mkfifo(source / "pipe")
    code = _tree(tmp_path)
    with pytest.raises(ConfigError) as raised:
        sourcedir.fetch(str(source), str(code), "hyperparameters.json")
    assert "pipe" in raised.value.problem
    _nothing_left(tmp_path)


def test_a_plain_local_source_with_links_is_copied_as_it_is(tmp_path: Path) -> None:
    """The twin: files, a subdir, a relative symlink (kept a symlink) and modes are copied."""
    source = tmp_path / "src"
    (source / "lib").mkdir(parents=True)
    (source / "train.py").write_bytes(BODY)
    (source / "lib" / "run.sh").write_text("#!/bin/sh\n")
    (source / "lib" / "run.sh").chmod(0o750)
    (source / "link.py").symlink_to("train.py")
    code = _tree(tmp_path)
    sourcedir.fetch(str(source), str(code), "hyperparameters.json")
    assert (code / "train.py").read_bytes() == BODY
    assert os.readlink(code / "link.py") == "train.py"
    assert (code / "lib" / "run.sh").stat().st_mode & 0o777 == 0o750


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_source_that_is_no_file_or_directory_is_refused(tmp_path: Path, kind: str) -> None:
    """sagemaker_submit_directory naming a FIFO (opening it waits for a writer for ever, deaf to a
    stop) or a device: refused, naming it, at the plan's look and at the fetch."""
    if kind == "fifo":
        source = tmp_path / "fifo"
        os.mkfifo(source)
    else:
        source = Path("/dev/null")
    code = _tree(tmp_path)
    for attempt in (
        lambda: sourcedir.view(str(source), str(code)),
        lambda: sourcedir.fetch(str(source), str(code), "h.json"),
    ):
        with pytest.raises(ConfigError) as raised:
            attempt()
        assert "is not a directory or a regular file" in raised.value.problem
    assert os.listdir(code) == []


def _wide_names(count: int, depth: int) -> bytes:
    """``count`` symlinks, then members ``depth`` components deep: the prefix check ran in
    time quadratic in the depth for each member."""
    raw = b""
    for index in range(count):
        link = tarfile.TarInfo(f"l{index}")
        link.type, link.linkname = tarfile.SYMTYPE, "train.py"
        raw += bytes(_block(link, tarfile.PAX_FORMAT))
    for index in range(count):
        deep = tarfile.TarInfo("/".join(["p"] * depth) + f"/f{index}")
        raw += bytes(_block(deep, tarfile.PAX_FORMAT))
    return raw


@pytest.mark.timeout(60)
def test_deep_names_beside_symlinks_are_checked_in_linear_time(tmp_path: Path) -> None:
    """200 members 20000 components deep beside 200 symlinks: the checks on names (before
    anything is written) finish within the hang detector; they were quadratic in the depth."""
    tarball = _write(tmp_path, _entry() + _wide_names(200, 20_000) + END)
    job = unpack.Job("h.json", unpack.Limits(), lambda: False)
    with archive.read(str(tarball), job, str(tarball)) as (_, infos):
        members = unpack._check(infos, job)  # the names-only pass, alone
    assert len(members) == 401


# -- the checks refuse nothing a tar writer makes -------------------------------------------------------

NAMES = st.text(alphabet="abcé_-.", min_size=1, max_size=12).filter(lambda name: name not in (".", ".."))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.dictionaries(
        st.lists(NAMES, min_size=1, max_size=3)
        .map("/".join)
        .map(lambda n: n + ("x" * 120 if len(n) % 3 else "")),
        st.binary(max_size=1500),
        min_size=1,
        max_size=6,
    ),
    fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]),
    mode=st.sampled_from(["w", "w:gz", "w:bz2", "w:xz"]),
)
def test_any_archive_tarfile_writes_unpacks_exactly(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes], fmt: int, mode: str
) -> None:
    """The twin of every refusal above: archives of files in nested dirs (long names: GNU long
    names and PAX paths), every format, every compression, unpack byte for byte."""
    paths = sorted(files)
    if any(other.startswith(path + "/") for path in paths for other in paths):
        return  # a file where another needs a directory: not a tree
    tmp_path = tmp_path_factory.mktemp("any")
    tarball = tmp_path / "src.tar"
    try:
        with tarfile.open(tarball, mode, format=fmt) as archive:
            for path in paths:
                archive.addfile(_info(path, files[path]), io.BytesIO(files[path]))
    except ValueError:
        return  # USTAR cannot hold the name
    code = _tree(tmp_path)
    assert sourcedir.view(str(tarball), str(code)).files == frozenset(paths)
    sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    for path in paths:
        assert (code / path).read_bytes() == files[path]


def test_an_archive_gnu_tar_makes_unpacks(tmp_path: Path) -> None:
    """The same with the system's tar (GNU tar: long names, symlinks, empty dirs, gzip)."""
    tar = shutil.which("tar")
    if tar is None:
        pytest.skip("no tar on PATH")
    source = tmp_path / "src"
    deep = source / ("long" * 40) / ("name" * 40)
    deep.mkdir(parents=True)
    (deep / "f.py").write_bytes(BODY)
    (source / "train.py").write_bytes(BODY)
    (source / "empty").mkdir()
    (source / "link.py").symlink_to("train.py")
    tarball = tmp_path / "src.tar.gz"
    subprocess.run([tar, "czf", str(tarball), "-C", str(source), "."], check=True)
    code = _tree(tmp_path)
    sourcedir.fetch(str(tarball), str(code), "hyperparameters.json")
    assert (code / ("long" * 40) / ("name" * 40) / "f.py").read_bytes() == BODY
    assert os.readlink(code / "link.py") == "train.py"
    assert (code / "empty").is_dir()


@pytest.mark.parametrize(
    ("offset", "data", "size", "after", "start"),
    [
        (1024, 1536, 0, 1024, 1024),
        (1024, 1536, 10, 1536, 1024),
        (512, 1024, 0, 1024, 1024),
        (1024, 1024, 0, 1024, 0),
    ],
    ids=["back-to-its-header", "data-not-skipped", "behind-the-last", "no-header"],
)
def test_a_header_that_does_not_advance_is_refused_whatever_the_size(
    offset: int, data: int, size: int, after: int, start: int
) -> None:
    """The advance check on its own (a tarfile that computed offsets some other way, with no
    negative size to show for it): the next header must lie past this one's data, and this one
    past the last."""
    info = tarfile.TarInfo("f.py")
    info.size, info.offset, info.offset_data = size, offset, data
    assert "does not advance" in archive._problem(info, start, after)
    info.offset, info.offset_data = 1024, 1536
    assert archive._problem(info, 1024, 1536 + -(-size // 512) * 512) == ""
