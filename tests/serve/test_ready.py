"""/ping answered by the front: 503 until the server's own health check passes, 503 once the server
is gone; the path mapping that lets a vLLM-like server run unpatched. Real processes and sockets, as
PID 1 and as subreaper."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import Supervised, events, sleep_until
from tests.serve.conftest import request, wait_event_where, wait_line


def _child_pid(run: Supervised) -> int:
    """The server's pid as seen from here (the init's only child)."""
    children = Path(f"/proc/{run.init_pid}/task/{run.init_pid}/children")
    return sleep_until(lambda: int(children.read_text().split()[0]) if children.read_text().split() else 0)


def test_a_loading_server_gets_503_until_it_is_ready(serve, tmp_path: Path) -> None:
    """The server listens at once but its health check blocks while it loads: /ping is 503 (with
    the reason), again and again, until the load ends; then 200. serve_ready comes after the load."""
    gate = tmp_path / "loaded"
    endpoint = serve("--load-gate", str(gate))
    run, port = endpoint
    wait_line(run, "listening")
    for _ in range(3):
        reply = request(port, "GET", "/ping")
        assert reply.status == 503, reply
        assert b"GET /ping: no answer for" in reply.body, reply
    gate.touch()
    wait_line(run, "loaded")
    sleep_until(lambda: request(port, "GET", "/ping").status == 200, what="/ping 200 after the load")
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 143, err[-2000:]
    names = [e["event"] for e in events(err)]
    assert names.count("serve_ready") == 1, names


def test_a_ready_server_gets_200(serve, tmp_path: Path) -> None:
    """The twin: a server whose health check passes has /ping 200 as soon as the front knows it, and
    the answer's body is empty (SageMaker's contract); the debug socket's status says so too."""
    control = tmp_path / "control.sock"
    run, port = serve(options=("--control-socket", str(control)))
    ready = run.wait_event("serve_ready")
    assert ready["check"] == "GET /ping"
    reply = request(port, "GET", "/ping")
    assert (reply.status, reply.body) == (200, b"")
    client = [sys.executable, "-m", "smsupervise.debug", "--socket", str(control), "--json", "status"]
    front = json.loads(subprocess.run(client, capture_output=True, check=True).stdout)["serve_front"]
    assert (front["ping"], front["state"], front["port"], front["ok"]) == (200, "ready", port, 1)
    run.signal(signal.SIGTERM)
    assert run.wait()[0] == 143


def test_a_killed_server_turns_ping_503_and_ends_the_run(serve, tmp_path: Path) -> None:
    """SIGKILL the server: /ping turns 503 ("not running") while smsupervise ends the run, and the
    run ends with the server's signal (exit 137) and child_exited naming the serving step."""
    release = tmp_path / "release"
    # A leftover holds the run open after the server dies, so the window can be observed.
    hold = (
        "import os, signal, time\nsignal.signal(15, signal.SIG_IGN)\n"
        f"while not os.path.exists({str(release)!r}): time.sleep(0.01)"
    )
    run, port = serve(options=("--leftover-grace", "120", "--stop-budget", "300"), env={"HOLD": hold})
    run.wait_event("serve_ready")
    assert request(port, "GET", "/ping").status == 200
    server = _child_pid(run)
    os.kill(server, signal.SIGKILL)
    exited = wait_event_where(run, "child_exited", step="serving")
    assert exited["signal"] == "SIGKILL"
    reply = request(port, "GET", "/ping")
    assert reply.status == 503, reply
    assert b"not running" in reply.body
    release.touch()
    code, _, err = run.wait()
    assert code == 137, err[-2000:]
    assert events(err)[-1]["exit_code"] == 137


def test_paths_are_mapped_for_a_server_with_other_names(serve) -> None:
    """--serve-map /ping=/health,/invocations=/v1/chat/completions: the health check goes to
    /health, /invocations reaches the server as /v1/chat/completions (query kept)."""
    run, port = serve(
        "--health-path", "/health", options=("--serve-map", "/ping=/health,/invocations=/v1/chat/completions")
    )
    assert run.wait_event("serve_ready")["check"] == "GET /health"
    assert request(port, "GET", "/ping").status == 200
    reply = request(port, "POST", "/invocations?x=1", b"0")
    assert (reply.status, reply.body) == (200, b"done 0 /v1/chat/completions?x=1")
    assert request(port, "GET", "/other").status == 404  # not mapped: passed as it is
    run.signal(signal.SIGTERM)
    run.wait()


def test_without_the_map_that_server_never_gets_ready(serve) -> None:
    """The twin: the same server without the map answers 404 on /ping, so /ping stays 503 and
    /invocations reaches it under its own name."""
    run, port = serve("--health-path", "/health")
    wait_line(run, "listening")
    reply = request(port, "GET", "/ping")
    assert reply.status == 503
    assert b"answered 404" in reply.body, reply
    assert request(port, "POST", "/invocations", b"0").body == b"done 0 /invocations"
    run.signal(signal.SIGTERM)
    _, _, err = run.wait()
    assert "serve_ready" not in [e["event"] for e in events(err)]
