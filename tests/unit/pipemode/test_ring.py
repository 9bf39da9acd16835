"""The relay's ring of pipes, on real pipes: order, capacity, and the shape after a discard."""

from __future__ import annotations

import os

from smsupervise.pipemode.ring import Ring


def _put(ring: Ring, data: bytes) -> None:
    """Write ``data`` into the ring as the relay's splice would, pipe by pipe."""
    view = memoryview(data)
    while view:
        tail = ring.tail_room()
        assert tail is not None, "the ring is full"
        count = os.write(tail.write_fd, view[: tail.space()])
        ring.added(tail, count)
        view = view[count:]


def _take(ring: Ring) -> bytes:
    """Read everything out of the ring, head first, as the relay's splice to the child would."""
    out = bytearray()
    while (head := ring.head()) is not None:
        chunk = os.read(head.read_fd, head.held)
        ring.consumed(head, len(chunk))
        out += chunk
    return bytes(out)


def test_bytes_come_out_in_order_across_pipes() -> None:
    """3 MiB and a tail spread over four pipes come out whole and in order, leaving the ring empty."""
    ring = Ring(4 << 20)
    data = os.urandom(3 << 20) + b"tail"
    _put(ring, data)
    assert len(ring.pipes) == 4
    assert _take(ring) == data
    assert ring.size == 0
    ring.close()


def test_the_ring_stops_at_its_capacity() -> None:
    """Filled to its capacity, the ring offers no more room (it does not grow past its share)."""
    ring = Ring(2 << 20)
    _put(ring, b"x" * (2 << 20))
    assert ring.tail_room() is None
    assert not ring.has_room()
    ring.close()


def test_after_a_discard_new_data_comes_out_whole() -> None:
    """An early close drops what is held; the next epoch's bytes must still come out (a discard
    that left empty pipes ahead of the data, or shrunken room, would hide them)."""
    ring = Ring(4 << 20)
    _put(ring, os.urandom((2 << 20) + 5))
    ring.full(ring.pipes[-1])  # as when small writes used up a pipe's slots
    ring.discard()
    assert ring.size == 0
    assert len(ring.pipes) == 1
    assert ring.pipes[0].room == ring.pipes[0].size
    fresh = os.urandom(3 << 20)
    _put(ring, fresh)
    assert _take(ring) == fresh
    ring.close()
