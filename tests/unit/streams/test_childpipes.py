"""How large the relay's next read of a child's pipe is: about LINES_PER_READ lines of the length
just seen, so that one loop iteration frames about as many lines whatever their length."""

from __future__ import annotations

from smsupervise.streams.childpipes import CHUNK, LINES_PER_READ, MIN_READ, read_size_for


def test_short_lines_shrink_the_next_read_to_about_lines_per_read_lines() -> None:
    """A chunk of 20-byte lines: the next read holds LINES_PER_READ of them, not a whole CHUNK."""
    size = read_size_for(CHUNK, CHUNK // 20)
    assert size < CHUNK
    assert size // 20 in range(LINES_PER_READ - 1, LINES_PER_READ + 2)


def test_long_lines_or_none_keep_whole_chunks() -> None:
    """The twin: 100-byte lines, one unterminated line, and tiny reads never go below the bounds."""
    assert read_size_for(CHUNK, CHUNK // 100) == CHUNK
    assert read_size_for(CHUNK, 0) == CHUNK
    assert read_size_for(200, 100) == MIN_READ
