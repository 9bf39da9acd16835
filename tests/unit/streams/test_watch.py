"""The stall watchdog's seam (``ProgressWatch``): one search per chunk, none for ``every`` seconds
after a match; ``^``/``$`` at the child's lines; a bad pattern named in the error."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsupervise.streams.watch import ProgressWatch, literal_prefix


def test_a_match_is_remembered_and_the_next_second_is_not_searched() -> None:
    """After a match at t, chunks before t + every are not searched (looks stays); the first one
    after is, and a match there moves last_match on."""
    watch = ProgressWatch(r"^step \d+", every=1.0)
    watch.look(b"loading\nstep 1 loss 0.5\n", 100.0)
    assert (watch.last_match, watch.looks, watch.matches) == (100.0, 1, 1)
    for offset in (0.1, 0.5, 0.99):
        watch.look(b"step 2\n", 100.0 + offset)
    assert (watch.last_match, watch.looks) == (100.0, 1)
    watch.look(b"step 3\n", 101.0)
    assert (watch.last_match, watch.looks, watch.matches) == (101.0, 2, 2)


def test_without_a_match_every_chunk_is_searched_and_nothing_is_remembered() -> None:
    """The negative twin: lines that do not match (``^`` anchors at a line's start, so "a step" is
    not "step") leave last_match None, and every chunk is searched."""
    watch = ProgressWatch(r"^step \d+", every=1.0)
    for index in range(5):
        watch.look(b"a step 1\nnothing\n", 100.0 + index * 0.01)
    assert (watch.last_match, watch.looks, watch.matches) == (None, 5, 0)


def test_a_bad_pattern_is_named_in_the_error() -> None:
    """An invalid regular expression fails at once, with the pattern and what to give instead."""
    with pytest.raises(ValueError, match=r"progress pattern 'step \(': .*regular expression"):
        ProgressWatch("step (")


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.sampled_from(["^step", "^$", "^a|b", "^(x+)y\\1", "^\\d+ it/s$", "^", "step$", "^[a-c]{2}"]),
    data=st.lists(st.sampled_from(["step", "a", "b", "x", "xxyxx", "12 it/s", "", "c", " "]), max_size=8).map(
        lambda words: "\n".join(words).encode()
    ),
)
def test_a_leading_caret_matches_the_lines_it_would_match_as_written(pattern: str, data: bytes) -> None:
    """A pattern starting with ``^`` is searched in another form (a newline, in the chunk with a
    newline before it): it matches a chunk exactly when the pattern as written, MULTILINE, does."""
    watch = ProgressWatch(pattern)
    watch.look(data, 0.0)
    assert (watch.matches == 1) is (re.search(pattern.encode(), data, re.MULTILINE) is not None)


@settings(max_examples=500, deadline=None)
@given(
    pattern=st.sampled_from(
        [
            "^Epoch \\d+",
            "loss=",
            "ab*c",
            "abc?",
            "ab{2}",
            "ab+",
            "a|bc",
            "(ab)",
            "xy.z",
            "step\\d",
            "^ab*",
            "é€",
        ]
    ),
    data=st.lists(
        st.sampled_from(
            ["Epoch 3", "loss=1", "ac", "abbc", "ab", "a", "bc", "xyqz", "step4", "é€", "cd", ""]
        ),
        max_size=6,
    ).map(lambda words: "\n".join(words).encode()),
)
def test_the_literal_prefilter_never_hides_a_match(pattern: str, data: bytes) -> None:
    """The literal prefix a chunk must hold before the regex runs is never more than every match
    begins with (an optional character after it, an alternation, a group): the watch matches a chunk
    exactly when the pattern as written does."""
    watch = ProgressWatch(pattern)
    watch.look(data, 0.0)
    assert (watch.matches == 1) is (re.search(pattern.encode(), data, re.MULTILINE) is not None)


def test_the_literal_prefix_stops_where_the_pattern_stops_being_literal() -> None:
    """Plain characters up to the first one with a meaning, less one a quantifier makes optional."""
    assert literal_prefix("\nEpoch \\d+") == "\nEpoch "
    assert literal_prefix("ab*c") == "a"
    assert literal_prefix("ab+") == "a"
    assert literal_prefix("ab|cd") == ""  # the other branch begins otherwise
    assert literal_prefix("(ab)") == ""
    assert literal_prefix("loss=") == "loss="
