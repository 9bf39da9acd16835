"""A Python job for the debug tests: optionally opts in to stacks, says ready, then loops in a
function with a recognisable name until killed. ``--ignore-term`` ignores SIGTERM,
``--block-term`` blocks it, ``--zombies N`` leaves N exited orphans to the reaper (as PID 1 it does
not reap them), ``--print N`` prints N numbered lines first."""

from __future__ import annotations

import os
import signal
import sys
import time


def deep_in_training_loop() -> None:
    while True:
        time.sleep(0.05)


def main(args: list[str]) -> None:
    if "--opt-in" in args:
        from smsupervise import checkpoint

        checkpoint.register(lambda: None)
    if "--ignore-term" in args:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--block-term" in args:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    if "--zombies" in args:  # orphans: they end up under the reaper (PID 1), which may not reap
        for _ in range(int(args[args.index("--zombies") + 1])):
            middle = os.fork()
            if middle == 0:
                os.fork()
                os._exit(0)
            os.waitpid(middle, 0)
    if "--print" in args:
        for number in range(int(args[args.index("--print") + 1])):
            print(f"line {number}", flush=True)
    os.write(1, b"ready\n")  # one write: several jobs may share the pipe
    deep_in_training_loop()


if __name__ == "__main__":
    main(sys.argv[1:])
