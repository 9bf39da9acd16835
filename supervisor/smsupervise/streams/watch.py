"""The stall watchdog's seam: has a line that shows progress gone by lately?

A ``ProgressWatch`` is handed every chunk the relay reads from the child (the bytes as the child wrote
them, before framing) and searches it with one compiled bytes regex (``re.MULTILINE``: ``^`` and
``$`` anchor at the child's lines), never per record. After a match it looks again only ``every``
seconds later: a flood of matching lines costs one search a second, and a watchdog whose timeout is
counted in minutes loses nothing by it. A chunk that matches nothing is searched whole, so a pattern
that never matches costs a search of every byte (benchmarks/logs.py measures both, see
benchmarks/README.md). A match split between two reads is not seen; the next matching line is.

Python's ``re`` tries a MULTILINE ``^`` at every byte (~25x slower than a pattern that starts with
a literal, which it finds with a fast scan), so a pattern that starts with ``^`` is searched as a
newline followed by the rest, in the chunk with a newline put before it: the same lines match. And
when every match begins with two literal characters or more (``^Epoch``, ``loss=``), a chunk that
does not hold them is passed over by ``bytes.find`` (memchr's speed), without the regex engine.

The watchdog itself (the option, the timeout, what it does on a stall) lands later; until then the
benchmark turns a watch on with ``BENCH_PATTERN_ENV`` to measure what it would cost.
"""

from __future__ import annotations

import re

BENCH_PATTERN_ENV = "SMSUPERVISE_BENCH_PROGRESS_PATTERN"  # benchmark-only: a pattern to search for


class ProgressWatch:
    """When a line matching ``pattern`` was last seen (``time.time()``; None: not yet)."""

    def __init__(self, pattern: str, every: float = 1.0) -> None:
        try:
            re.compile(pattern)  # the pattern as given must be valid, whatever we search with
            self.anchored = pattern.startswith("^")
            searched = "\n" + pattern[1:] if self.anchored else pattern
            self.regex = re.compile(searched.encode(), re.MULTILINE)
            # Bytes every match starts with: a chunk without them is passed over at the speed of
            # bytes.find, without starting the regex engine.
            self.prefix = literal_prefix(searched).encode()
            # Its least common byte (in text: capitals, digits and signs before lower case, space
            # and newline), looked for first with memchr, which is ~10x faster than a search for
            # the whole prefix, and stops at the first one it finds.
            self.rare = min(self.prefix, key=_commonness).to_bytes(1, "big") if self.prefix else b""
        except re.error as error:
            raise ValueError(
                f"progress pattern {pattern!r}: {error}; give a Python regular expression"
            ) from None
        self.every = every
        self.last_match: float | None = None
        self.matches = 0  # chunks in which a match was found (each look that found one)
        self.looks = 0  # chunks searched
        self._next_look = float("-inf")

    def look(self, data: bytes, now: float) -> None:
        """A chunk the child wrote, read at ``now``."""
        if now < self._next_look:
            return
        self.looks += 1
        if self.anchored:
            data = b"\n" + data
        if len(self.prefix) >= 2 and (self.rare not in data or self.prefix not in data):
            return
        if self.regex.search(data) is not None:
            self.matches += 1
            self.last_match = now
            self._next_look = now + self.every


_META = frozenset("\\.^$*+?{}[]|()")
_QUANTIFIERS = frozenset("*?{+")


def literal_prefix(pattern: str) -> str:
    """The characters every match of ``pattern`` begins with, as far as they are plain literals
    (up to the first character with a meaning; one that a quantifier follows is not required;
    none with an alternation anywhere: its other branches begin otherwise)."""
    if "|" in pattern:
        return ""
    end = 0
    while end < len(pattern) and pattern[end] not in _META:
        end += 1
    if end < len(pattern) and pattern[end] in _QUANTIFIERS:
        end -= 1  # "ab*": the b may be absent
    return pattern[: max(end, 0)]


def _commonness(byte: int) -> int:
    """How common a byte is in log text, roughly: newline and space, then lower case, then the rest."""
    if byte in (10, 32):
        return 2
    return 1 if 97 <= byte <= 122 else 0
