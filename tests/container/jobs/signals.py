"""A job that reports every signal it gets on stdout; with ``--ignore-term`` it also ignores SIGTERM.

Prints ``ready`` once its handlers are in place, then waits for signals forever (until SIGTERM
ends it with the default action, or SIGKILL).
"""

import signal
import sys


def report(signum: int, _frame: object) -> None:
    print(f"got {signal.Signals(signum).name}", flush=True)


for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
    signal.signal(sig, report)
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    signal.pause()
