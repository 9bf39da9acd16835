"""A tiny stand-in for a training job, used by `make demo`.

It prints a few "epochs" on stdout and a warning on stderr, leaves a background helper behind
(an orphan that smsupervise reaps and stops), and exits with the code given as argv[1] (default 0).
"""

import os
import subprocess
import sys
import time

subprocess.Popen(["sleep", "30"], start_new_session=False)  # noqa: S603,S607 - a leftover on purpose
for epoch in range(3):
    print(f"epoch {epoch}: loss={1.0 / (epoch + 1):.3f}", flush=True)
    time.sleep(0.1)
print("WARNING: this is a demo job, nothing was trained", file=sys.stderr, flush=True)
print(f"job pid {os.getpid()} exiting; the `sleep 30` it started is left for smsupervise", flush=True)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
