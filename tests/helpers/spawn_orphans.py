"""Make N orphans that exit at once, then report how many are still zombies.

Usage: spawn_orphans.py N [DEADLINE_S]. Each orphan is a grandchild whose parent exits first, so it
is re-parented to the reaper (PID 1 or the nearest subreaper). The orphans' pids are tracked
exactly, so the check does not depend on who the reaper is. Exit 0 when none is a zombie within the
deadline; exit 1 and print the count otherwise.
"""

import os
import sys
import time


def still_zombies(pids: list[int]) -> int:
    count = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except OSError:  # reaped: gone from /proc
            continue
        if state == b"Z":
            count += 1
    return count


def spawn_orphans(count: int) -> list[int]:
    read_end, write_end = os.pipe()
    batch = 50
    for start in range(0, count, batch):
        middle = os.fork()
        if middle == 0:  # intermediate parent: fork the orphans, report their pids, exit
            os.close(read_end)
            pids = []
            for _ in range(min(batch, count - start)):
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                pids.append(pid)
            os.write(write_end, b"".join(b"%d\n" % pid for pid in pids))
            os._exit(0)
        os.waitpid(middle, 0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    return [int(line) for line in data.split()]


def main() -> int:
    count = int(sys.argv[1])
    deadline = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    pids = spawn_orphans(count)
    assert len(pids) == count, (len(pids), count)
    end = time.monotonic() + deadline
    while True:
        left = still_zombies(pids)
        if left == 0:
            print(f"orphans: {count} made, 0 zombies", flush=True)
            return 0
        if time.monotonic() > end:
            print(f"orphans: {count} made, {left} zombies left", flush=True)
            return 1
        time.sleep(0.005)


if __name__ == "__main__":
    raise SystemExit(main())
