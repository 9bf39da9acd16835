"""The recent output, for ``smsupervise-debug logs``: a bounded ring of the chunks we wrote.

The relay's hot path only appends the bytes it has already rendered (one deque append per read
chunk, never per line, and no pass over them: the framer says how many records they hold);
splitting into lines and parsing happen when someone asks. Followers get each new chunk through a
callback, only while they are connected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

RING_BYTES = 256 * 1024  # per stream
Follower = Callable[[str, bytes], None]


class Recent:
    """The last ``RING_BYTES`` written per stream, and the live followers."""

    def __init__(self, limit: int = RING_BYTES) -> None:
        self.limit = limit
        self._chunks: dict[str, deque[bytes]] = {"stdout": deque(), "stderr": deque()}
        self._sizes = {"stdout": 0, "stderr": 0}
        self.records = {"stdout": 0, "stderr": 0}  # complete lines written
        self.bytes = {"stdout": 0, "stderr": 0}
        self.followers: list[Follower] = []

    def add(self, stream: str, data: bytes, records: int | None = None) -> None:
        """What was just written for ``stream`` (rendered bytes: JSON records or raw lines);
        ``records``: how many complete lines that is, when the caller knows (the framer does), else
        they are counted here."""
        if not data:
            return
        chunks = self._chunks[stream]
        chunks.append(data)
        self._sizes[stream] += len(data)
        self.bytes[stream] += len(data)
        self.records[stream] += data.count(b"\n") if records is None else records
        while self._sizes[stream] - len(chunks[0]) >= self.limit:
            self._sizes[stream] -= len(chunks.popleft())
        for follower in self.followers:
            follower(stream, data)

    def lines(self, stream: str) -> list[bytes]:
        """The complete lines held for ``stream``, oldest first (a cut first line is dropped)."""
        text = b"".join(self._chunks[stream])
        lines = text.split(b"\n")
        if self._sizes[stream] >= self.limit and len(lines) > 1:
            lines = lines[1:]  # the ring cut the oldest line
        return [line for line in lines[:-1] if line]

    def tail(self, stream: str, count: int) -> list[bytes]:
        """The last ``count`` complete lines of ``stream``, reading only the newest chunks."""
        chunks = self._chunks[stream]
        taken: list[bytes] = []
        newlines = 0
        for chunk in reversed(chunks):
            taken.append(chunk)
            newlines += chunk.count(b"\n")
            if newlines > count:
                break
        else:
            return self.lines(stream)[-count:] if count else []
        lines = b"".join(reversed(taken)).split(b"\n")[1:-1]  # the first may be cut; the last is open
        return [line for line in lines if line][-count:] if count else []
