"""Child output -> one JSON object per line. Pure and synchronous: bytes in, rendered bytes out.

Record schema (keys in this order, absent ones omitted)::

    {"ts", "stream", "level", "msg", "seq", "pid", "host", "job", "progress", "eol", "partial"}

* ``ts``: when smsupervise read the bytes (RFC 3339 UTC, milliseconds); ``stream``: stdout|stderr.
* ``msg``: the line without its terminator, UTF-8 with U+FFFD for bad bytes (docker's choice).
* ``seq``: one counter across both streams, per emitted object.
* The terminator is recorded so that the output gives the input back exactly: none means ``\\n``;
  ``"progress": true`` means ``\\r`` (a tqdm-style state); ``"eol": "crlf"`` means ``\\r\\n``;
  ``"eol": "none"`` means no terminator yet (a tail flushed after silence or at EOF).
* ``partial: {"id", "n", "last"}``: a message too long for one line, split on character (hence
  UTF-8) boundaries; ``id`` is the ``seq`` of part 1, ``n`` counts from 1.
* A line that is itself a JSON object is emitted at the root with our keys added only where absent
  (so Logs Insights discovers its fields and EMF ``_aws`` metrics work).

Speed (benchmarks/logs.py, benchmarks/README.md): a chunk of plain lines (``\n`` only, valid
UTF-8, nothing that JSON escapes but the newlines, no line long enough to split) is framed whole, with
no Python code per line: one split, one ``orjson.dumps`` of the whole chunk to prove that nothing
needs escaping, and one ``bytes.join`` of the lines between pre-rendered templates, the ``seq``
digits taken from a table. Lines that may carry a level or be JSON objects (``_SLOW_START``) are
rendered one by one between bulk runs. Any other chunk goes line by line (``_frame_plain``, one
``orjson.dumps`` per line), and anything with ``\r`` or an open split message through ``_frame``.
The two paths give the same bytes (tests/unit/streams/test_framing.py).
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

from smsupervise.streams.events import rfc3339_ms

# A level is detected only from what the line itself says, at its start (a bounded prefix):
# Python logging's default "WARNING:root:...", the toolkit's "<asctime> <name> LEVEL ...",
# "[2026-...] LEVEL", glog/absl "W1122 15:00:00.1 ...", and Python tracebacks.
_LEVEL_WORDS = "DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL"
# One pattern per first character, so that a line is tried only against the form it can be (one
# alternation of all four cost a line ~12,000 instructions; benchmarks/README.md). Each is matched
# within the first 120 characters, in the order one alternation of them would try them.
_PLAIN = rf"(?:{_LEVEL_WORDS})[:\s\]]"
# ``(?:\S+\s+)?`` before the word, greedy: a logger name is skipped first, else the word itself.
_DATED = rf"\[?\d{{4}}-\d\d-\d\d[ T][0-9:,.]+\]?\s+(?:\S+\s+({_LEVEL_WORDS})\b|({_LEVEL_WORDS})\b)"
_GLOG_PATTERN = r"[IWEF]\d{4} \d\d:\d\d:\d\d"
_TRACEBACK = "Traceback (most recent call last):"
_GLOG = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}
_NORMAL = {"WARN": "WARNING", "FATAL": "CRITICAL"}
_LEVEL_CHARS = frozenset("DIWECF[0123456789T")
_DATED_CHARS = frozenset("[0123456789")


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled at its first use, not at import (start-up time: benchmarks/pid1.py)."""
    return re.compile(pattern)


@functools.cache
def _bytes_regex(pattern: bytes) -> re.Pattern[bytes]:
    """The bytes twin of ``_regex``."""
    return re.compile(pattern)


@functools.cache
def _seq_digits(padded: bool) -> list[bytes]:
    """The decimal digits of 0..999 (``padded``: always three, as the low part of a larger number),
    so that a run of consecutive ``seq`` values is a slice, not 1000 formattings."""
    return [(b"%03d" if padded else b"%d") % value for value in range(1000)]


def detect_level(line: str) -> str | None:
    """The level a line announces at its start, if any."""
    first = line[:1]
    word: str | None = None
    if first in _DATED_CHARS:
        dated = _regex(_DATED).match(line, 0, 120)
        word = None if dated is None else dated.group(1) or dated.group(2)
    elif first == "T":
        word = "ERROR" if line.startswith(_TRACEBACK) else None
    elif first in _LEVEL_CHARS:
        plain = _regex(_PLAIN).match(line, 0, 120)
        if plain is not None:
            word = plain.group()[:-1]
        elif first in _GLOG and _regex(_GLOG_PATTERN).match(line, 0, 120) is not None:
            word = _GLOG[first]
    return None if word is None else _NORMAL.get(word, word)


class RankTags(NamedTuple):
    """mpirun's ``--tag-output``: a ``[<job>,<rank>]<stream>:`` prefix names the rank of the line.
    With ``-map-by slot`` the ranks fill the hosts in order, ``per_host`` each."""

    per_host: int
    hosts: tuple[str, ...]
    console: frozenset[int] | None = None  # ranks shown (--ranks); None: all


_MPI_TAG = r"^\[\d+,(\d+)\]<(?:stdout|stderr|stddiag)>:"


class RecordFormat(NamedTuple):
    """What every record of a run shares."""

    pid: int
    host: str | None = None
    job: str | None = None
    max_line_bytes: int = 16384
    extra: Mapping[str, object] | None = None  # more fields on every record (rank, local_rank)
    tags: RankTags | None = None  # MPI: rank, local_rank and host from each line's tag


class SeqCounter:
    """The ``seq`` counter shared by both streams (a one-field box the framers update in place)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


# What a line's terminator adds to its record, once: as fields (for records built as dicts) and as
# the rendered bytes (for the hot path's byte templates).
_TERMINATOR_KEYS: dict[str, dict[str, object]] = {
    "\n": {},
    "\r": {"progress": True},
    "\r\n": {"eol": "crlf"},
    "": {"eol": "none"},
}
_TERMINATOR_FIELDS = {
    terminator: b"," + orjson.dumps(keys)[1:-1] if keys else b""
    for terminator, keys in _TERMINATOR_KEYS.items()
}
_SPLIT = r"(\r\n|\r|\n)"


class StreamFramer:
    """Frames one stream's bytes into records. ``feed`` returns the rendered complete lines; the
    caller decides when to ``flush`` the unterminated tail (silence, EOF).

    Memory is bounded: an unterminated line longer than ``hold_limit`` bytes is emitted as
    ``partial`` parts as it arrives (the part that ends it carries ``last: true``).
    """

    def __init__(
        self, stream: str, fmt: RecordFormat, counter: SeqCounter, progress_interval: float = 0.0
    ) -> None:
        self.stream = stream
        self.fmt = fmt
        self.counter = counter
        self._pending = b""
        self._partial: list[int] | None = None  # [id, next n] while a split message is open
        self.hold_limit = max(4 * fmt.max_line_bytes, 65536)
        self.progress_interval = progress_interval
        # The newest progress state not yet emitted (throttled), unrendered: seq is given only
        # to what is emitted, so a gap in seq always means loss.
        self._held: tuple[bytes, str] | None = None
        self._last_progress = float("-inf")
        static = {
            "pid": fmt.pid,
            **({"host": fmt.host} if fmt.host else {}),
            **({"job": fmt.job} if fmt.job else {}),
            **(fmt.extra or {}),
        }
        self._static = static
        self._tail = b"," + orjson.dumps(static)[1:-1] if static else b""
        self._stream_json = orjson.dumps(stream)
        self._stamp_second = -1
        self._stamp_prefix = b""
        self._heads_ts = b""
        self._heads: dict[str | None, bytes] = {}
        self.bulk = True  # whole chunks of plain lines at once; False: the per-line path (tests)
        # After a chunk the bulk path could not take (or took for mostly lines with a level), the
        # next ``bulk_retry`` go line by line without trying: a log of such lines does not pay
        # for a bulk attempt on every read.
        self.bulk_retry = 8
        self._bulk_rest = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- rendering -----------------------------------------------------------------------------
    def _head(self, ts: bytes, level: str | None) -> bytes:
        """A record's bytes before its message: kept per level while ``ts`` stays the same (the
        lines of one read share it), so a chunk of lines with a level builds each head once."""
        if ts != self._heads_ts:
            self._heads_ts = ts
            self._heads = {}
        head = self._heads.get(level)
        if head is None:
            said = b"" if level is None else b',"level":"' + level.encode() + b'"'
            head = self._heads[level] = b'{"ts":' + ts + b',"stream":' + self._stream_json + said + b',"msg":'
        return head

    def _render(self, out: list[bytes], ts: bytes, line: str, terminator: str) -> None:
        """Append the record(s) for one complete line (slow path: everything but plain lines)."""
        if self.fmt.tags is not None and self._partial is None:
            tagged = _regex(_MPI_TAG).match(line)
            if tagged is not None and self._render_tagged(out, ts, tagged, line, terminator):
                return
        if self._partial is None and line[:1] == "{" and line[-1:] == "}":
            rendered = self._render_object(ts, line, terminator)
            if rendered is not None:
                out.append(rendered)
                return
        level = detect_level(line) if self._partial is None else None
        encoded = orjson.dumps(line)
        extra = _TERMINATOR_FIELDS[terminator]
        head = self._head(ts, level)
        if self._partial is None and (
            len(head) + len(encoded) + len(extra) + len(self._tail) + 40 <= self.fmt.max_line_bytes
        ):
            self.counter.value += 1
            out.append(b'%s%s,"seq":%d%s%s}\n' % (head, encoded, self.counter.value, self._tail, extra))
            return
        self._render_parts(out, head, line, extra, last=True)

    def _render_tagged(
        self, out: list[bytes], ts: bytes, tagged: re.Match[str], line: str, terminator: str
    ) -> bool:
        """An MPI-tagged line as a record of its rank (or nothing, when --ranks hides it); False
        when it is too long to be one record (it then goes out untagged, split)."""
        tags = self.fmt.tags
        assert tags is not None
        rank, text = int(tagged.group(1)), line[tagged.end() :]
        if tags.console is not None and rank not in tags.console:
            return True
        per = max(tags.per_host, 1)
        record: dict[str, Any] = {"ts": orjson.loads(ts), "stream": self.stream}
        level = detect_level(text)
        if level is not None:
            record["level"] = level
        record["msg"] = text
        record["seq"] = self.counter.value + 1
        record.update(self._static)
        record.update({"rank": rank, "local_rank": rank % per})
        if rank // per < len(tags.hosts):
            record["host"] = tags.hosts[rank // per]
        record.update(_TERMINATOR_KEYS[terminator])
        rendered = orjson.dumps(record) + b"\n"
        if len(rendered) > self.fmt.max_line_bytes:
            return False
        self.counter.value += 1
        out.append(rendered)
        return True

    def _render_object(self, ts: bytes, line: str, terminator: str) -> bytes | None:
        """A line that is a JSON object stays that object, byte for byte (an integer beyond 64 bits
        keeps its digits; parsing and dumping again would make it a float): our fields that it does
        not have are added before its closing brace."""
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        self.counter.value += 1
        ours: dict[str, Any] = {"ts": orjson.loads(ts), "stream": self.stream, "seq": self.counter.value}
        ours.update(self._static)
        ours.update(_TERMINATOR_KEYS[terminator])
        missing = {key: value for key, value in ours.items() if key not in obj}
        body = line.rstrip()[:-1].rstrip()  # without its closing brace
        added = orjson.dumps(missing)[1:-1]
        separator = b"," if obj and added else b""
        rendered = body.encode() + separator + added + b"}\n"
        if len(rendered) > self.fmt.max_line_bytes:
            self.counter.value -= 1
            return None  # too big to stay one object: it goes out as a split message instead
        return rendered

    def _render_parts(self, out: list[bytes], head: bytes, text: str, extra: bytes, last: bool) -> None:
        """Emit ``text`` as partial parts, each line within max_line_bytes."""
        # Room for the message in one line: the cap minus everything else on it (seq, partial
        # meta and terminator fields at their widest).
        budget = self.fmt.max_line_bytes - len(head) - len(self._tail) - len(extra) - 110
        if budget < 64:
            raise ValueError(f"--max-line-bytes {self.fmt.max_line_bytes} leaves no room for a message")
        start = 0
        while True:
            end = min(len(text), start + budget)
            piece = orjson.dumps(text[start:end])
            while len(piece) - 2 > budget and end - start > 1:  # escapes made it longer: shrink
                end = start + max(1, (end - start) * budget // (len(piece) - 2))
                piece = orjson.dumps(text[start:end])
            final = last and end >= len(text)
            self.counter.value += 1
            if self._partial is None:
                self._partial = [self.counter.value, 1]
            pid, n = self._partial
            meta = b',"partial":{"id":%d,"n":%d,"last":%s}' % (pid, n, b"true" if final else b"false")
            self._partial[1] = n + 1
            out.append(
                head
                + piece
                + b',"seq":%d' % self.counter.value
                + self._tail
                + (extra if final else b"")
                + meta
                + b"}\n"
            )
            start = end
            if start >= len(text):
                break
        if last:
            self._partial = None

    # -- framing -------------------------------------------------------------------------------
    def _stamp(self, now: float) -> bytes:
        """``now`` as the rendered ``ts`` value, ``rfc3339_ms``'s text; the date and time of day are
        formatted once a second (reads come many a second: strftime was a cost per read)."""
        whole = int(now)
        if whole != self._stamp_second:
            self._stamp_second = whole
            self._stamp_prefix = b'"' + rfc3339_ms(whole)[:-5].encode()
        return self._stamp_prefix + b'.%03dZ"' % int((now - whole) * 1000)

    def feed(self, data: bytes, now: float) -> bytes:
        """Add bytes read from the child; returns the records for every line they complete."""
        if not data:
            return b""
        buf = self._pending + data if self._pending else data
        cut = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
        if cut >= 0 and cut == len(buf) - 1 and buf[cut] == 13:  # a final \r may be half of \r\n: wait
            cut = max(buf.rfind(b"\n", 0, cut), buf.rfind(b"\r", 0, cut))
        out: list[bytes] = []
        ts = self._stamp(now)
        if cut < 0:
            self._pending = buf
        else:
            self._pending = buf[cut + 1 :]
            body = buf[: cut + 1]
            framed = False
            if self._bulk_rest > 0:
                self._bulk_rest -= 1
            elif (
                self.bulk
                and self._partial is None
                and self._held is None
                and b"\r" not in body
                and b'"' not in body  # the usual escapes, found at memchr's speed
                and b"\\" not in body
            ):
                framed = self._frame_bulk(out, ts, body)
                if not framed:  # what this chunk had, the next ones likely have: rest a while
                    self._bulk_rest = self.bulk_retry
            if not framed:
                self._frame(out, ts, body.decode("utf-8", "replace"), now)
        if len(self._pending) > self.hold_limit:
            self._spill(out, ts)
        return b"".join(out)

    def _frame_bulk(self, out: list[bytes], ts: bytes, body: bytes) -> bool:
        """Frame ``body`` (complete ``\n`` lines) without Python code per plain line; False, with
        nothing done, when a line needs what only the per-line path does (escapes, U+FFFD, a split)."""
        lines = body.split(b"\n")
        lines.pop()  # body ends with "\n": the last piece is empty
        count = len(lines)
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return False  # bad UTF-8: the per-line path puts U+FFFD in
        # Valid UTF-8 comes out of orjson byte for byte, each escape longer than what it stands
        # for: when the chunk grows by its newlines' escapes alone, no line needs escaping.
        if len(orjson.dumps(text)) != len(body) + 2 + count:
            return False
        head = self._head(ts, None)
        if not _lines_within(body, self.fmt.max_line_bytes - len(head) - len(self._tail) - 34):
            return False
        firsts = b"".join(map(_FIRST_BYTE, lines))
        if len(firsts.translate(None, _SLOW_BYTES)) == len(firsts):
            self._bulk(out, head, lines)
            return True
        if len(firsts) != count:
            return False  # empty lines among them: the first bytes do not line up with the lines
        start = slow_lines = 0
        for slow in _bytes_regex(_SLOW_CLASS).finditer(firsts):
            at = slow.start()
            if at > start:
                self._bulk(out, head, lines[start:at])
            self._render(out, ts, lines[at].decode(), "\n")
            start = at + 1
            slow_lines += 1
        if start < count:
            self._bulk(out, head, lines[start:])
        if 2 * slow_lines > count:  # mostly lines with a level: the per-line path is cheaper for them
            self._bulk_rest = self.bulk_retry
        return True

    def _bulk(self, out: list[bytes], head: bytes, lines: list[bytes]) -> None:
        """One record per line of ``lines`` (each checked by ``_frame_bulk``), in one join: the
        lines stand between pre-rendered pieces, seq's digits come from ``_seq_digits``."""
        between = self._tail + b"}\n" + head + b'"'
        parts = [head + b'"']
        seq = self.counter.value + 1
        done, count = 0, len(lines)
        while done < count:
            high, low = divmod(seq + done, 1000)
            take = min(count - done, 1000 - low)
            run = [between] * (4 * take)
            run[0::4] = lines[done : done + take]
            run[1::4] = [b'","seq":%d' % high if high else b'","seq":'] * take
            run[2::4] = _seq_digits(high > 0)[low : low + take]
            parts += run
            done += take
        parts[-1] = self._tail + b"}\n"
        self.counter.value = seq + count - 1
        out.append(b"".join(parts))

    def _frame(self, out: list[bytes], ts: bytes, text: str, now: float) -> None:
        if "\r" not in text and self._partial is None and self._held is None:
            self._frame_plain(out, ts, text)
            return
        pieces = _regex(_SPLIT).split(text)
        for index in range(0, len(pieces) - 1, 2):
            line, terminator = pieces[index], pieces[index + 1]
            if terminator == "\r":
                if not line and self.progress_interval > 0:
                    continue  # a bare \r before a redraw (tqdm) is not a state worth a throttle slot
                self._held = (ts, line)
                if now - self._last_progress >= self.progress_interval:
                    self._emit_held(out, now)
                continue
            self._emit_held(out, now)  # the last state before a newline is always kept
            self._render(out, ts, line, terminator)

    def _frame_plain(self, out: list[bytes], ts: bytes, text: str) -> None:
        """The hot path: only ``\\n`` terminators and no open split message."""
        head = self._head(ts, None)
        tail = self._tail + b"}\n"
        limit = self.fmt.max_line_bytes - len(head) - len(tail) - 30
        dumps = orjson.dumps
        append = out.append
        counter = self.counter
        seq = counter.value
        lines = text.split("\n")
        lines.pop()  # text ends with "\n": the last piece is empty
        for line in lines:
            if line and line[0] in _SLOW_START:
                counter.value = seq
                self._render(out, ts, line, "\n")
                seq = counter.value
                continue
            encoded = dumps(line)
            if len(encoded) > limit:
                counter.value = seq
                self._render(out, ts, line, "\n")
                seq = counter.value
                continue
            seq += 1
            append(head)
            append(encoded)
            append(b',"seq":%d' % seq)
            append(tail)
        counter.value = seq

    def _emit_held(self, out: list[bytes], now: float) -> None:
        if self._held is not None:
            ts, line = self._held
            self._held = None
            self._last_progress = now
            self._render(out, ts, line, "\r")

    def progress_due(self, now: float) -> float | None:
        """When the held progress state may go out (None: nothing held)."""
        return None if self._held is None else self._last_progress + self.progress_interval

    def take_progress(self, now: float) -> bytes:
        """Emit the held progress state if its interval has passed."""
        due = self.progress_due(now)
        if due is None or now < due:
            return b""
        out: list[bytes] = []
        self._emit_held(out, now)
        return b"".join(out)

    def _spill(self, out: list[bytes], ts: bytes) -> None:
        """Emit most of an over-long unterminated line as partial parts, keeping memory bounded."""
        keep = _utf8_safe_cut(self._pending, len(self._pending) - 4)
        text = self._pending[:keep].decode("utf-8", "replace")
        self._pending = self._pending[keep:]
        self._render_parts(out, self._head(ts, None), text, b"", last=False)

    def flush(self, now: float) -> bytes:
        """Emit the unterminated tail (``"eol": "none"``) and any held progress state."""
        out: list[bytes] = []
        ts = self._stamp(now)
        if self._pending.endswith(b"\r"):  # no \n came: that \r was a terminator after all
            text, self._pending = self._pending.decode("utf-8", "replace"), b""
            self._frame(out, ts, text, now)
        self._emit_held(out, now)
        if self._pending or self._partial is not None:
            text, self._pending = self._pending.decode("utf-8", "replace"), b""
            self._render(out, ts, text, "")
        return b"".join(out)


# Lines starting with these may be JSON objects or carry a level: they take the slow path.
_SLOW_START = _LEVEL_CHARS | {"{"}
_SLOW_BYTES = "".join(sorted(_SLOW_START)).encode()
_SLOW_CLASS = b"[" + re.escape(_SLOW_BYTES) + b"]"
_FIRST_BYTE = operator.itemgetter(slice(0, 1))


def _lines_within(body: bytes, most: int) -> bool:
    """Whether no line of ``body`` (complete lines) is longer than ``most`` bytes without its
    newline: a few ``rfind`` calls, each over a window of ``most`` bytes, not a look at every line."""
    if most < 1:
        return False
    start, end = 0, len(body)
    while end - start > most + 1:
        cut = body.rfind(b"\n", start, start + most + 1)
        if cut < 0:
            return False  # the line at ``start`` has no newline within ``most`` bytes
        start = cut + 1
    return True


def _utf8_safe_cut(data: bytes, at: int) -> int:
    """The largest index <= ``at`` that does not split a UTF-8 sequence (cut before a lead byte)."""
    at = max(0, min(at, len(data)))
    for index in range(at, max(at - 4, -1), -1):
        if index == len(data) or data[index] & 0xC0 != 0x80:
            return index
    return at
