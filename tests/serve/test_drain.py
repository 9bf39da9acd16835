"""The draining stop: on SIGTERM /ping turns 503 at once, requests are still served for the drain
delay, then no new connections, requests in flight finish, and only then the server gets SIGTERM.
Under steady load of 1-5 s requests nothing that arrived before the drain ended is lost; without the
front (the server gets SIGTERM at once) requests are cut."""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
from collections.abc import Callable

from tests.conftest import Supervised, events
from tests.serve.conftest import BACKEND, Reply, free_port, request, wait_line

CLIENTS = 6


def _load(port: int, seed: int, replies: list[Reply]) -> None:
    """One client: requests of 1-5 s, one after another, each on a new connection, until the
    port refuses connections (the drain is over)."""
    rng = random.Random(seed)
    while True:
        reply = request(port, "POST", "/invocations", f"{rng.uniform(1, 5):.2f}".encode())
        replies.append(reply)
        if reply.error == "refused":
            return


def _run_under_load(run: Supervised, port: int) -> tuple[list[Reply], bytes]:
    """Load from CLIENTS clients; SIGTERM once each has a request in the server; the run's end."""
    replies: list[Reply] = []
    threads = [threading.Thread(target=_load, args=(port, seed, replies)) for seed in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(CLIENTS):
            wait_line(run, "started /invocations")
        run.signal(signal.SIGTERM)
        code, _, err = run.wait(timeout=120)
    finally:
        for thread in threads:
            thread.join(timeout=120)
    assert code == 143, err[-3000:]
    return replies, err


def test_sigterm_under_load_loses_no_request(serve) -> None:
    """Every request sent before the front stopped taking connections is answered 200 (the refused
    ones came after the drain); the final event counts 0 cut; the server got SIGTERM only after the
    requests in flight were done."""
    run, port = serve(options=("--serve-drain-delay", "2"))
    run.wait_event("serve_ready")
    replies, err = _run_under_load(run, port)
    cut = [r for r in replies if r.error not in (None, "refused")]
    assert cut == []
    served = [r for r in replies if r.status == 200]
    assert len(served) >= CLIENTS
    assert all(r.body.startswith(b"done ") for r in served)
    records = events(err)
    stopped = next(e for e in records if e["event"] == "serve_stopped")
    assert (stopped["cut"], stopped["served"]) == (0, len(served))
    names = [e["event"] for e in records]
    assert names.index("serve_drained") < names.index("signal_forwarded")
    drained = next(e for e in records if e["event"] == "serve_drained")
    assert drained["in_flight"] == 0


def test_without_the_front_sigterm_cuts_requests(start: Callable[..., Supervised]) -> None:
    """The twin: the same server and load with --serve-front off: SIGTERM reaches the server at once
    and the requests it was working on are cut."""
    port = free_port()
    env = {
        **os.environ,
        "SMSUPERVISE_SERVE": f"{sys.executable} {BACKEND}",
        "SAGEMAKER_BIND_TO_PORT": str(port),
    }
    run = start("--control-socket", "none", "--serve-front", "off", "serve", env=env, bufsize=0)
    wait_line(run, "listening")
    replies, _ = _run_under_load(run, port)
    cut = [r for r in replies if r.error not in (None, "refused")]
    assert len(cut) >= 1


def test_ping_turns_503_at_once_while_requests_are_served(serve) -> None:
    """During the drain delay (long here) /ping answers 503 saying why, while a request is still
    served; a second SIGTERM ends the delay at once and the run ends."""
    run, port = serve(options=("--serve-drain-delay", "120", "--stop-budget", "300"))
    run.wait_event("serve_ready")
    assert request(port, "GET", "/ping").status == 200
    run.signal(signal.SIGTERM)
    run.wait_event("serve_draining")
    reply = request(port, "GET", "/ping")
    assert reply.status == 503
    assert b'"state":"stopping"' in reply.body
    assert request(port, "POST", "/invocations", b"0").status == 200
    run.signal(signal.SIGTERM)
    code, _, err = run.wait()
    assert code == 143
    stopped = next(e for e in events(err) if e["event"] == "serve_stopped")
    assert (stopped["served"], stopped["cut"]) == (3, 0)  # 2 /ping and 1 request
