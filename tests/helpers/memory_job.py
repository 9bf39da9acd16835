"""Jobs that use memory the way training jobs do, for the diagnosis tests (stdlib only).

- ``alloc``: allocate 1 MiB every 10 ms until the kernel stops it.
- ``plateau MB``: allocate MB MiB, hold them 3 s (memory pressure), then as ``alloc``.
- ``selfkill MB``: allocate MB MiB, then SIGKILL itself (a plain kill -9, no OOM).
- ``launcher VICTIM [WORKER]``: a torchrun-like launcher: ranks 0 and 1 (RANK/LOCAL_RANK set), each
  with one forked "DataLoader worker" holding WORKER MiB; rank VICTIM allocates until killed; the
  launcher polls its ranks like torchrun's monitor, SIGTERMs the rest when one fails and exits 1.
- ``worker-victim``: one rank whose forked worker allocates until killed; the rank reports it as
  PyTorch's DataLoader does and exits 1.
- ``child-victim``: no ranks: the main process runs ``alloc`` as its child, then exits 1.
- ``hang SECONDS``: a launcher whose ranks train 1 s; then rank 0 prints "All done!" and exits 0
  while rank 1 sleeps SECONDS more (600 if 0: "forever") before it exits 0; the launcher waits for
  both, as torchrun does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

HOLD: list[bytearray] = []


def hold(mib: int) -> None:
    for _ in range(mib):
        HOLD.append(bytearray(1 << 20))


def grow() -> None:
    print("growing", flush=True)
    while True:
        HOLD.append(bytearray(1 << 20))
        time.sleep(0.01)


def fork_worker(mib: int, *, greedy: bool = False) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            if greedy:
                grow()
            hold(mib)
            while True:
                time.sleep(1)
        finally:
            os._exit(0)
    return pid


def rank(victim: bool, worker_mib: int) -> None:
    fork_worker(worker_mib)
    if victim:
        time.sleep(0.3)  # the sampler sees the rank and its worker before it grows
        grow()
    signal.pause()


def launcher(victim: int, worker_mib: int) -> int:
    ranks = []
    for number in (0, 1):
        env = {**os.environ, "RANK": str(number), "LOCAL_RANK": str(number), "WORLD_SIZE": "2"}
        argv = [sys.executable, __file__, "rank", str(int(number == victim)), str(worker_mib)]
        ranks.append(subprocess.Popen(argv, env=env))
    while True:
        time.sleep(0.3)  # torchrun's monitor interval is of this order: a dead rank is a zombie meanwhile
        failed = [(n, p.returncode) for n, p in enumerate(ranks) if p.poll() is not None]
        if failed:
            break
    for proc in ranks:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    number, code = failed[0]
    print(f"ChildFailedError: rank {number} exitcode: {code}", file=sys.stderr, flush=True)
    return 1


def worker_victim() -> int:
    if "RANK" not in os.environ:
        env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0"}
        return subprocess.call([sys.executable, __file__, "worker-victim"], env=env)
    pid = fork_worker(0, greedy=True)
    _, status = os.waitpid(pid, 0)
    name = signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else str(status)
    print(f"RuntimeError: DataLoader worker (pid {pid}) is killed by signal: {name}", file=sys.stderr)
    return 1


def hang(seconds: float) -> int:
    ranks = []
    for number in (0, 1):
        env = {**os.environ, "RANK": str(number), "LOCAL_RANK": str(number), "WORLD_SIZE": "2"}
        ranks.append(
            subprocess.Popen([sys.executable, __file__, "hang-rank", str(number), str(seconds)], env=env)
        )
    return max(proc.wait() for proc in ranks)


def hang_rank(number: int, seconds: float) -> None:
    time.sleep(1)  # training: long enough for the sampler (0.1 s) to see every rank
    if number == 0:
        print("All done!", flush=True)
        return
    time.sleep(seconds or 600)  # "forever", but a test that fails leaves nothing for long


def main() -> int:
    what = sys.argv[1]
    if what == "alloc":
        grow()
    if what == "plateau":
        hold(int(sys.argv[2]))
        time.sleep(3)
        grow()
    if what == "selfkill":
        hold(int(sys.argv[2]))
        os.kill(os.getpid(), signal.SIGKILL)
    if what == "launcher":
        return launcher(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    if what == "rank":
        rank(sys.argv[2] == "1", int(sys.argv[3]))
    if what == "worker-victim":
        return worker_victim()
    if what == "child-victim":
        subprocess.call([sys.executable, __file__, "alloc"])
        return 1
    if what == "hang":
        return hang(float(sys.argv[2]))
    if what == "hang-rank":
        hang_rank(int(sys.argv[2]), float(sys.argv[3]))
        return 0
    raise SystemExit(f"unknown job {what!r}")


if __name__ == "__main__":
    sys.exit(main())
