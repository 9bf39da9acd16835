"""The ring of recent output: bounded, whole lines, the newest kept, followers fed."""

from __future__ import annotations

from smsupervise.streams.recent import Recent


def test_the_ring_keeps_the_newest_whole_lines_within_its_limit() -> None:
    """Past the limit the oldest chunks go; a line cut by that is not returned."""
    ring = Recent(limit=100)
    for number in range(50):
        ring.add("stdout", b"line %02d\n" % number)
    lines = ring.lines("stdout")
    assert lines[-1] == b"line 49"
    assert len(b"\n".join(lines)) <= 100
    assert all(line.startswith(b"line ") and len(line) == 7 for line in lines)
    assert ring.records["stdout"] == 50  # counters cover everything, not only what is held


def test_tail_reads_only_what_it_needs_and_agrees_with_lines() -> None:
    """tail(n) equals the last n of lines(), with lines split across chunks."""
    ring = Recent(limit=1000)
    ring.add("stderr", b"a\nb")
    ring.add("stderr", b"c\nd\ne")
    ring.add("stderr", b"\nf\n")
    assert ring.lines("stderr") == [b"a", b"bc", b"d", b"e", b"f"]
    for count in range(1, 7):
        assert ring.tail("stderr", count) == ring.lines("stderr")[-count:]
    assert ring.tail("stderr", 0) == []


def test_followers_get_each_chunk_of_their_streams() -> None:
    """A follower sees what is added after it registered, with its stream."""
    ring = Recent()
    seen: list[tuple[str, bytes]] = []
    ring.add("stdout", b"before\n")
    ring.followers.append(lambda stream, data: seen.append((stream, data)))
    ring.add("stdout", b"after\n")
    ring.add("stderr", b"err\n")
    assert seen == [("stdout", b"after\n"), ("stderr", b"err\n")]
