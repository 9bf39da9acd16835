"""`podman run -e SMSUPERVISE_SERVE_FRONT=1 IMAGE serve`: the example endpoint of Dockerfile.example
behind the front, as SageMaker runs and stops endpoints (skipped where podman cannot run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.container.podman import MlTree, Podman, problem

PROBLEM = problem()
pytestmark = [
    pytest.mark.container,
    pytest.mark.timeout(900),
    pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or ""),
]

REQUEST = """\
import sys, urllib.error, urllib.request
url = "http://127.0.0.1:8080" + sys.argv[1]
data = sys.argv[2].encode() if len(sys.argv) > 2 else None
try:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as reply:
        sys.stdout.write(f"{reply.status} {reply.read().decode()}")
except urllib.error.HTTPError as error:
    sys.stdout.write(f"{error.code} {error.read().decode()}")
"""


@pytest.fixture
def podman(podman_session: Podman, image: str) -> Podman:
    """The session's podman, with the example image built."""
    return podman_session


def test_the_example_endpoint_behind_the_front(podman: Podman, image: str, tmp_path: Path) -> None:
    """smsupervise owns 8080, the example server gets another port in SAGEMAKER_BIND_TO_PORT;
    /ping is 200 once it answers, /invocations gives the predictions, `podman stop -t 30` drains and
    the example server (which exits 0 on SIGTERM) ends the run with 0."""
    ml = MlTree(tmp_path / "ml", data=False)
    (ml.path / "model" / "model.json").write_text(json.dumps({"w": 2.0, "b": 1.0}))
    options = [*ml.mounts(), "--env", "SMSUPERVISE_SERVE_FRONT=1", "--env", "SMSUPERVISE_SERVE_DRAIN_DELAY=1"]
    server = podman.start(image, "serve", options=options, what="serve-front")
    try:
        front = server.wait_for_event("serve_front")
        assert front["port"] == 8080
        assert front["server_port"] != 8080
        server.wait_for_event("serve_ready")
        ping = podman.exec(server.name, "python3", "-c", REQUEST, "/ping")
        assert ping.out == b"200 ", ping.err.decode()
        answer = podman.exec(server.name, "python3", "-c", REQUEST, "/invocations", "1,2.5")
        assert answer.out == b"200 3.000000\n6.000000\n", answer.err.decode()
        podman.stop(server.name, 30)
        assert server.wait() == 0, server.output()
        server.wait_for_event("serve_drained")
        stopped = server.wait_for_event("serve_stopped")
        assert (stopped["served"], stopped["cut"]) == (2, 0)
    finally:
        podman.cleanup()
