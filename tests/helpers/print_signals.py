"""Record every signal received, one number per line, in the file named by argv[1].

Writes "ready" once every handler is installed. Exits 0 on SIGTERM (after recording it) unless
--survive-term is given. Used as a grandchild behind `sh -c` (dumb-init's print_signals, adapted).
"""

import os
import signal
import sys
import time

SKIP = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}


def main() -> int:
    path = sys.argv[1]
    survive_term = "--survive-term" in sys.argv
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(signum: int, _frame: object) -> None:
        os.write(out, b"%d\n" % signum)
        if signum == signal.SIGTERM and not survive_term:
            os._exit(0)

    for signum in signal.valid_signals():
        if signum in SKIP:
            continue
        try:
            signal.signal(signum, record)
        except (OSError, ValueError):
            continue
    os.write(out, b"ready\n")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return 3


if __name__ == "__main__":
    raise SystemExit(main())
