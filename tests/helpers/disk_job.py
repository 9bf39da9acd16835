"""Jobs that fill filesystems, for the diagnosis tests (stdlib only).

fill DIR            write DIR/blob in 256 KiB chunks until the filesystem refuses (ENOSPC: the
                    traceback's "[Errno 28] No space left on device"), exit 1
shm MIB             map a MIB MiB file in /dev/shm and touch every page: SIGBUS when /dev/shm
                    cannot hold it (what a DataLoader worker meets)
say-enospc          print an ENOSPC error while nothing is full, exit 1
"""

from __future__ import annotations

import mmap
import os
import signal
import sys


def fill(directory: str) -> None:
    with open(os.path.join(directory, "blob"), "wb") as blob:
        while True:
            blob.write(b"\0" * (256 << 10))
            blob.flush()


def shm(mib: int) -> None:
    size = mib << 20
    fd = os.open("/dev/shm/batch", os.O_CREAT | os.O_RDWR, 0o600)
    os.ftruncate(fd, size)
    view = mmap.mmap(fd, size)
    for offset in range(0, size, mmap.PAGESIZE):
        view[offset] = 1
    print("all pages touched", flush=True)


def main() -> int:
    what = sys.argv[1]
    if what == "fill":
        fill(sys.argv[2])
    elif what == "shm":
        shm(int(sys.argv[2]))
    elif what == "say-enospc":
        print("OSError: [Errno 28] No space left on device: '/elsewhere/x'", file=sys.stderr)
        return 1
    elif what == "bus":
        os.kill(os.getpid(), signal.SIGBUS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
