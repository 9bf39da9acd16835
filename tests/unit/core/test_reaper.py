"""The Reaper in a process of its own (its ``waitpid(-1)`` would steal the test runner's children)."""

from __future__ import annotations

import subprocess

from tests.conftest import PYTHON, ROOT

# A parent with one child: reap() while the child lives, then after it was killed and reaped.
SCRIPT = """
import os, signal, time
from smsupervise.core.reaper import Reaper
reaper = Reaper()
pid = os.posix_spawn("/bin/sleep", ["sleep", "60"], dict(os.environ))
print("with a live child:", reaper.reap())
os.kill(pid, signal.SIGKILL)
deadline = time.monotonic() + 30
while not reaper.reap() and time.monotonic() < deadline:
    time.sleep(0.005)
print("after it was reaped:", reaper.reap())
"""


def test_reap_says_childless_only_when_no_child_is_left() -> None:
    """reap() is False while a child lives (the twin) and True once the last child was reaped."""
    done = subprocess.run(
        [PYTHON, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(ROOT / "supervisor")},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["with a live child: False", "after it was reaped: True"]
