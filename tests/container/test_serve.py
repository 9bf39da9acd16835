"""`podman run IMAGE serve`: the example endpoint under smsupervise, stopped as SageMaker stops endpoints."""

from __future__ import annotations

import json
from pathlib import Path

from tests.container.podman import MlTree, Podman

REQUEST = """\
import sys, urllib.request
url = "http://127.0.0.1:8080" + sys.argv[1]
data = sys.argv[2].encode() if len(sys.argv) > 2 else None
with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as reply:
    sys.stdout.write(reply.read().decode())
"""


def test_serve_answers_then_stops_cleanly(podman: Podman, image: str, tmp_path: Path) -> None:
    """`serve` answers /ping and /invocations with the trained model; `podman stop -t 30` ends it with 0."""
    ml = MlTree(tmp_path / "ml", data=False)
    (ml.path / "model" / "model.json").write_text(json.dumps({"w": 2.0, "b": 1.0}))
    server = podman.start(image, "serve", options=ml.mounts(), what="serve")
    spawned = server.wait_for_event("child_spawned")
    assert (spawned["step"], spawned["argv"]) == ("serving", ["/usr/local/bin/serve"])
    server.wait_for_line("listening on port 8080 \\(model: loaded\\)")
    ping = podman.exec(server.name, "python3", "-c", REQUEST, "/ping")
    assert (ping.code, ping.out) == (0, b"ok\n"), ping.err.decode()
    answer = podman.exec(server.name, "python3", "-c", REQUEST, "/invocations", "1,2.5")
    assert (answer.code, answer.out) == (0, b"3.000000\n6.000000\n"), answer.err.decode()
    podman.stop(server.name, 30)
    assert server.wait() == 0, server.output()
    stop = server.wait_for_event("stop_requested")
    assert (stop["reason"], stop["grace_period"], stop["stop_budget"]) == ("SIGTERM", 20, 30)
    assert server.wait_for_event("child_exited", step="serving")["exit_code"] == 0
    assert server.wait_for_line("INFO serve: stopped cleanly")


def test_stopped_serve_summary_does_not_mention_training(podman: Podman, image: str, tmp_path: Path) -> None:
    """The `exiting` event of a stopped endpoint describes serving, not training that never was."""
    ml = MlTree(tmp_path / "ml", data=False)
    server = podman.start(image, "serve", options=ml.mounts(), what="serve")
    server.wait_for_line("listening on port 8080")
    podman.stop(server.name, 30)
    assert server.wait() == 0
    summary = server.wait_for_event("exiting")["stop"]
    assert summary.startswith("Stopped by SIGTERM after ")
    assert "training did not start" not in summary, summary
