"""mpirun's --tag-output prefixes become rank, local_rank and host fields (RecordFormat.tags)."""

from __future__ import annotations

import orjson

from smsupervise.streams.framing import RankTags, RecordFormat, SeqCounter, StreamFramer


def _records(data: bytes, tags: RankTags | None) -> list[dict[str, object]]:
    framer = StreamFramer("stdout", RecordFormat(pid=7, host="algo-1", job="j", tags=tags), SeqCounter())
    return [orjson.loads(line) for line in (framer.feed(data, 0.0) + framer.flush(0.0)).splitlines()]


def test_a_tagged_line_names_its_rank_and_host() -> None:
    """[1,3]<stdout>: with 2 ranks per host is rank 3, local rank 1, on the second host."""
    tags = RankTags(2, ("algo-1", "algo-2"))
    (record,) = _records(b"[1,3]<stdout>:ERROR: loss is nan\n", tags)
    assert (record["msg"], record["rank"], record["local_rank"], record["host"]) == (
        "ERROR: loss is nan",
        3,
        1,
        "algo-2",
    )
    assert (record["level"], record["seq"], record["pid"]) == ("ERROR", 1, 7)


def test_without_tags_the_prefix_stays_and_ranks_filter_the_console() -> None:
    """The negative twin: no tags, no rank; with --ranks 0 rank 3's line is not shown, seq has no gap."""
    (plain,) = _records(b"[1,3]<stdout>:hello\n", None)
    assert plain["msg"] == "[1,3]<stdout>:hello"
    assert "rank" not in plain
    shown = _records(
        b"[1,3]<stdout>:hidden\n[1,0]<stdout>:shown\nmpirun says\n", RankTags(2, ("a", "b"), frozenset({0}))
    )
    assert [(r["msg"], r.get("rank"), r["seq"]) for r in shown] == [("shown", 0, 1), ("mpirun says", None, 2)]
