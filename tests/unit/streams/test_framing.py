"""The line framer: arbitrary bytes in, JSON lines out, nothing lost."""

from __future__ import annotations

import re
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsupervise.streams.framing import RecordFormat, SeqCounter, StreamFramer, detect_level

CAP = 1024
TERMINATORS = {None: "\n", "crlf": "\r\n", "none": ""}


def _reconstruct(records: list[dict[str, Any]], originals: dict[int, str]) -> str:
    """Join messages back with their terminators; JSON-object records map back via ``originals``."""
    text, parts = [], []
    for record in records:
        if "msg" not in record or record["seq"] in originals:
            text.append(originals[record["seq"]])
            continue
        parts.append(record["msg"])
        if "partial" in record and not record["partial"]["last"]:
            continue
        message, parts = "".join(parts), []
        terminator = "\r" if record.get("progress") else TERMINATORS[record.get("eol")]
        text.append(message + terminator)
    return "".join(text)


def _run(chunks: list[bytes], framer: StreamFramer) -> list[bytes]:
    out = b"".join(framer.feed(chunk, 1_700_000_000.0 + i) for i, chunk in enumerate(chunks))
    out += framer.flush(1_800_000_000.0)
    return out.splitlines(keepends=True)


def _is_json_object(line: str) -> bool:
    if not (line.startswith("{") and line.endswith("}")):
        return False
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def _expected_objects(data: bytes) -> list[str]:
    """Input lines that are JSON objects, in order (they come out at the root, not as msg)."""
    text = data.decode("utf-8", "replace")
    pieces = re.split(r"(\r\n|\r|\n)", text)
    return [pieces[i] + pieces[i + 1] for i in range(0, len(pieces) - 1, 2) if _is_json_object(pieces[i])]


byte_streams = st.lists(
    st.one_of(
        st.binary(max_size=300),
        st.sampled_from(
            [
                b"\n",
                b"\r",
                b"\r\n",
                b"\xff",
                b"\xe2\x82",
                b"\xac",
                b"\x00",
                "é".encode(),
                "€".encode(),
                b'{"a": 1}\n',
                b"WARNING:root:x\n",
                b"x" * 3000,
                b"{",
                b"}\n",
            ]
        ),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=byte_streams, cuts=st.lists(st.integers(min_value=1, max_value=700), max_size=30))
def test_any_bytes_any_chunking_every_line_valid_capped_and_lossless(
    pieces: list[bytes], cuts: list[int]
) -> None:
    """For any byte stream cut into any chunks: every output line is one JSON object within the
    cap, and joining the messages back (parts rejoined, terminators restored) gives the decoded
    input exactly, in order."""
    data = b"".join(pieces)
    chunks, start = [], 0
    for size in cuts:
        chunks.append(data[start : start + size])
        start += size
    chunks.append(data[start:])
    framer = StreamFramer(
        "stderr",
        RecordFormat(pid=42, host="algo-1", job="job", max_line_bytes=CAP),
        SeqCounter(),
        progress_interval=0.0,
    )
    lines = _run(chunks, framer)
    records = []
    for line in lines:
        assert len(line) <= CAP, len(line)
        assert line.endswith(b"\n")
        record = orjson.loads(line)
        assert isinstance(record, dict)
        assert record["stream"] == "stderr"
        records.append(record)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    objects = iter(_expected_objects(data))
    originals = {r["seq"]: next(objects) for r in records if "msg" not in r}
    assert _reconstruct(records, originals) == data.decode("utf-8", "replace")


@given(st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]), st.binary(max_size=200)), max_size=30))
def test_seq_is_one_counter_across_both_streams(writes: list[tuple[str, bytes]]) -> None:
    """stdout and stderr share one seq counter: merged, the records number 1..N without gaps."""
    counter = SeqCounter()
    fmt = RecordFormat(pid=1)
    framers = {name: StreamFramer(name, fmt, counter) for name in ("stdout", "stderr")}
    out = b"".join(framers[name].feed(data + b"\n", 0.0) for name, data in writes)
    seqs = sorted(orjson.loads(line)["seq"] for line in out.splitlines())
    assert seqs == list(range(1, len(seqs) + 1))


def test_progress_states_are_throttled_but_the_last_before_a_newline_is_kept() -> None:
    """tqdm writes many \\r states: one per interval goes out, and the final state before the
    newline always does; the seq has no gaps (dropped states never took a number)."""
    framer = StreamFramer("stderr", RecordFormat(pid=1), SeqCounter(), progress_interval=10.0)
    out = framer.feed(b"".join(b"%d%%|\r" % i for i in range(100)), 100.0)
    out += framer.feed(b"100%|done\n", 101.0)
    records = [orjson.loads(line) for line in out.splitlines()]
    assert [r["msg"] for r in records] == ["0%|", "99%|", "100%|done"]
    assert [r.get("progress", False) for r in records] == [True, True, False]
    assert [r["seq"] for r in records] == [1, 2, 3]


def test_a_bare_carriage_return_does_not_use_the_throttle_slot() -> None:
    """Code that writes "\\r" before each redraw: the empty state is skipped when throttling, so the
    first state shown is a real one. Unthrottled (interval 0, lossless) it is kept."""
    data = b"".join(b"\repoch %d" % i for i in range(5)) + b"\n"
    throttled = StreamFramer("stdout", RecordFormat(pid=1), SeqCounter(), progress_interval=10.0)
    records = [orjson.loads(line) for line in throttled.feed(data, 100.0).splitlines()]
    assert [r["msg"] for r in records] == ["epoch 0", "epoch 3", "epoch 4"]
    lossless = StreamFramer("stdout", RecordFormat(pid=1), SeqCounter(), progress_interval=0.0)
    records = [orjson.loads(line) for line in lossless.feed(data, 100.0).splitlines()]
    assert [r["msg"] for r in records] == ["", "epoch 0", "epoch 1", "epoch 2", "epoch 3", "epoch 4"]


def test_held_progress_state_is_released_when_its_interval_passes() -> None:
    """A throttled state is not lost: ``take_progress`` lets it out once the interval has passed."""
    framer = StreamFramer("stderr", RecordFormat(pid=1), SeqCounter(), progress_interval=5.0)
    framer.feed(b"10%\r20%\r3", 0.0)  # 10% goes out at once; 20% is held (throttled)
    assert framer.progress_due(1.0) == 5.0
    assert framer.take_progress(1.0) == b""
    assert orjson.loads(framer.take_progress(5.0))["msg"] == "20%"


def test_json_object_lines_go_to_the_root_with_ours_only_where_absent() -> None:
    """An EMF line stays one JSON object at the root (so CloudWatch extracts the metric); a key the
    child set itself (here `stream`) is not overwritten."""
    emf = {
        "_aws": {
            "Timestamp": 1,
            "CloudWatchMetrics": [{"Namespace": "ml", "Dimensions": [[]], "Metrics": [{"Name": "loss"}]}],
        },
        "loss": 0.25,
        "stream": "mine",
    }
    framer = StreamFramer("stdout", RecordFormat(pid=9, job="j"), SeqCounter())
    record = orjson.loads(framer.feed(orjson.dumps(emf) + b"\n", 0.0))
    assert record["_aws"] == emf["_aws"]
    assert record["loss"] == 0.25
    assert record["stream"] == "mine"
    assert record["job"] == "j"
    assert record["seq"] == 1
    assert "msg" not in record


def test_a_five_megabyte_line_is_split_and_memory_stays_bounded() -> None:
    """A 5 MB line fed in 64 KiB chunks goes out as parts while it arrives (the framer never holds
    more than its limit), each part within the cap, rejoining to the line."""
    framer = StreamFramer("stdout", RecordFormat(pid=1), SeqCounter())
    line = (b"0123456789abcdef" * 327680)[:5_000_000]
    out = []
    for start in range(0, len(line), 65536):
        out.append(framer.feed(line[start : start + 65536], 0.0))
        assert framer.pending <= framer.hold_limit
    out.append(framer.feed(b"\n", 0.0))
    records = [orjson.loads(x) for x in b"".join(out).splitlines()]
    assert all(len(orjson.dumps(r)) < 16384 for r in records)
    assert "".join(r["msg"] for r in records).encode() == line
    assert records[-1]["partial"]["last"] is True
    assert {r["partial"]["id"] for r in records} == {records[0]["seq"]}


def test_nul_and_invalid_utf8_survive_as_escapes_and_replacement_characters() -> None:
    """NUL stays (as \\u0000); invalid bytes become U+FFFD, as docker and the toolkit do."""
    framer = StreamFramer("stdout", RecordFormat(pid=1), SeqCounter())
    record = orjson.loads(framer.feed(b"a\x00b\xffc\xe2\x82\n", 0.0))
    assert record["msg"] == "a\x00b\ufffdc\ufffd"


def test_detect_level_knows_common_formats_and_nothing_else() -> None:
    """Python logging, the toolkit's format, glog and tracebacks are recognised; prose is not."""
    assert detect_level("WARNING:root:disk almost full") == "WARNING"
    assert detect_level("2026-11-22 15:00:00,123 sagemaker-training-toolkit INFO     Imported") == "INFO"
    assert detect_level("E1122 15:00:00.123456 12 main.cc:1] boom") == "ERROR"
    assert detect_level("Traceback (most recent call last):") == "ERROR"
    assert detect_level("[2026-11-22 15:00:00] WARN slow step") == "WARNING"
    assert detect_level("Information about the run") is None
    assert detect_level("epoch 1 INFO") is None
    assert detect_level("") is None


def test_a_json_line_passes_exactly_even_with_integers_beyond_64_bits() -> None:
    """The child's JSON object keeps its bytes (no float for a 30-digit integer, 1.0 stays 1.0);
    our fields are added only where it has none."""
    framer = StreamFramer("stdout", RecordFormat(pid=7), SeqCounter())
    out = framer.feed(b'{"step": 123456789012345678901234567890, "loss": 1.0, "pid": "theirs"}\n', 0.0)
    assert out.startswith(b'{"step": 123456789012345678901234567890, "loss": 1.0, "pid": "theirs",')
    record = orjson.loads(out)
    assert record["pid"] == "theirs"
    assert record["stream"] == "stdout"
    assert record["seq"] == 1


# -- the bulk path: whole chunks of plain lines at once --------------------------------------------
bulk_pieces = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"plain words here\n",
                b"x\n",
                b"\n",
                b"loss=0.25 %d %s %% 100%\n",
                b"INFO step 3\n",
                b"2026-11-22 15:00:00 INFO x\n",
                b"Traceback (most recent call last):\n",
                b'{"a": 1}\n',
                b"[1,2]<stdout>:rank line\n",
                b'a "quoted" word\n',
                b"back\\slash\n",
                b"tab\there\n",
                b"del\x7f nul\x00\n",
                "é € \u2028 \U0001f600\n".encode(),
                b"bad \xff byte\n",
                b"cut \xf0\x9f\x98\n",
                b"\r",
                b"y" * 900 + b"\n",
                b"z" * 1100 + b"\n",
            ]
        ),
        st.text(max_size=40).map(lambda text: text.encode() + b"\n"),
        st.integers(min_value=900, max_value=1030).map(lambda size: b"q" * size + b"\n"),  # near CAP
    ),
    max_size=60,
)


def _framer(bulk: bool, start: int, fmt: RecordFormat, retry: int = 0) -> StreamFramer:
    counter = SeqCounter()
    counter.value = start
    framer = StreamFramer("stdout", fmt, counter)
    framer.bulk = bulk
    framer.bulk_retry = retry
    return framer


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=bulk_pieces,
    cuts=st.lists(st.integers(min_value=1, max_value=3000), max_size=8),
    start=st.sampled_from([0, 5, 990, 999, 1000, 99_998, 123_456_789_995]),
    fmt=st.sampled_from(
        [
            RecordFormat(pid=7),
            RecordFormat(pid=7, host="algo-%d", job="j%s%%", max_line_bytes=CAP),
            RecordFormat(pid=7, extra={"rank": 3, "local_rank": 1}, max_line_bytes=2048),
        ]
    ),
    retry=st.sampled_from([0, 1, 8]),
)
def test_the_bulk_path_gives_the_per_line_paths_bytes(
    pieces: list[bytes], cuts: list[int], start: int, fmt: RecordFormat, retry: int
) -> None:
    """For any chunking of any mix of lines (plain, level-bearing, JSON objects, quotes, escapes,
    bad UTF-8, lines near and over the cap, ``%``), from any seq (crossing a thousand, a million),
    whether the bulk path rests after a chunk it could not take or not: the framer with the bulk
    path writes exactly the bytes the per-line path writes."""
    data = b"".join(pieces)
    chunks, at = [], 0
    for size in cuts:
        chunks.append(data[at : at + size])
        at += size
    chunks.append(data[at:])
    fast, slow = _framer(True, start, fmt, retry), _framer(False, start, fmt)
    assert _run(chunks, fast) == _run(chunks, slow)
    assert fast.counter.value == slow.counter.value


def test_the_bulk_path_takes_plain_lines_and_leaves_what_needs_the_per_line_path() -> None:
    """Plain lines (levels and JSON objects among them too) are framed in bulk; a chunk with a line
    that JSON must escape, bad UTF-8 or a line too long for one record is left to the per-line path,
    untouched (nothing emitted, seq unchanged)."""
    ts = b'"2026-11-22T15:00:00.000Z"'
    taken = [b"a b c\n" * 50, b"x\nINFO y\n{}\n\xc3\xa9\n", b"100% %d\n"]
    left = [b"ok\n" * 9 + b'say "hi"\n', b"a\\b\n", b"a\tb\n", b"\xff\n", b"x" * 20000 + b"\n", b"\n\nINFO\n"]
    for body in taken + left:
        framer = _framer(True, 0, RecordFormat(pid=1))
        out: list[bytes] = []
        assert framer._frame_bulk(out, ts, body) is (body in taken), body[:40]
        emitted = b"".join(out).splitlines()
        assert len(emitted) == framer.counter.value == (body.count(b"\n") if body in taken else 0)


# detect_level as it was (one alternation of every form), the reference for the one that tries only
# the form a line's first character allows.
_REFERENCE_LEVEL = re.compile(
    r"(?:(?P<plain>DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)[:\s\]]"
    r"|\[?\d{4}-\d\d-\d\d[ T][0-9:,.]+\]?\s+(?:\S+\s+)?"
    r"(?P<dated>DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\b"
    r"|(?P<glog>[IWEF])\d{4} \d\d:\d\d:\d\d"
    r"|(?P<tb>Traceback \(most recent call last\):))"
)


def _reference_level(line: str) -> str | None:
    match = _REFERENCE_LEVEL.match(line[:120])
    if match is None:
        return None
    if match.group("tb"):
        return "ERROR"
    if match.group("glog"):
        return {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}[match.group("glog")]
    word = match.group("plain") or match.group("dated")
    return {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(word, word)


level_tokens = st.sampled_from(
    [
        "2026-11-22",
        "[2026-11-22",
        "15:00:00,123",
        "15:00:00]",
        "T15:00:00.5",
        "INFO",
        "WARN",
        "WARNING",
        "WARNINGS",
        "FATAL",
        "ERROR:",
        "DEBUG]",
        "CRITICAL",
        "name",
        "toolkit",
        "E1122",
        "W0101",
        "12:00:00.1",
        "Traceback",
        "(most",
        "recent",
        "call",
        "last):",
        "x",
        "",
        "1234-56-78",
        "é",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(
    tokens=st.lists(level_tokens, max_size=7),
    separators=st.lists(st.sampled_from([" ", "  ", "\t", "", ":", "T"]), min_size=7, max_size=7),
    pad=st.integers(min_value=0, max_value=130),
)
def test_detect_level_says_what_the_single_alternation_said(
    tokens: list[str], separators: list[str], pad: int
) -> None:
    """For lines made of the formats' pieces in any order and spacing (and, pushed past the 120
    characters looked at, by padding in front of the rest): the same level as one alternation of
    every form, as detect_level was."""
    line = "".join(token + sep for token, sep in zip(tokens, separators, strict=False))
    for candidate in (line, line[:1] + " " * pad + line[1:], "2026-11-22 15:00:00 " + " " * pad + line):
        assert detect_level(candidate) == _reference_level(candidate), candidate
