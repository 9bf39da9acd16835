"""A Python relay for ``benchmarks.pipe``'s ``py-splice`` case: a thread per channel looping on a
blocking ``os.splice`` (1 MiB pipes), the feeder's loop with nothing around it, so a run tells what
Python threads cost against the C relays from what the rest of smsupervise costs.

Usage: ``python benchmarks/py_splice.py UP DOWN [UP DOWN ...]``. Blocking opens, as ``csplice.c``.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading

PIPE_SIZE = 1 << 20
SPLICE_F_MOVE = 1


def relay(up: str, down: str) -> None:
    source = os.open(up, os.O_RDONLY)
    sink = os.open(down, os.O_WRONLY)
    for fd in (source, sink):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    while os.splice(source, sink, PIPE_SIZE, None, None, SPLICE_F_MOVE):
        pass
    os.close(sink)  # the consumer's EOF now, not when the last channel ends and the process exits
    os.close(source)


def main() -> int:
    paths = sys.argv[1:]
    if not paths or len(paths) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    pairs = zip(paths[::2], paths[1::2], strict=True)
    threads = [threading.Thread(target=relay, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
