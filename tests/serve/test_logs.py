"""Serving logs: an access record per request (method, path, status, bytes, latency); successful
/pings counted into one ping_summary per interval instead; a failed /ping always a record."""

from __future__ import annotations

import signal

import pytest

from tests.conftest import events
from tests.serve.conftest import request, wait_line

PINGS = 25


@pytest.mark.parametrize("interval", ["600", "0"])
def test_pings_are_collapsed_into_a_summary(serve, interval: str) -> None:
    """25 successful /pings: no access record each but one ping_summary counting 25 (written at
    the end of the run, the interval being long); the twin with --serve-ping-summary 0 writes a
    record for each. Other requests always get a record with every field."""
    run, port = serve(options=("--serve-drain-delay", "0", "--serve-ping-summary", interval))
    run.wait_event("serve_ready")
    for _ in range(PINGS):
        assert request(port, "GET", "/ping").status == 200
    assert request(port, "POST", "/invocations", b"0").status == 200
    run.signal(signal.SIGTERM)
    records = events(run.wait()[2])
    pings = [e for e in records if e["event"] == "access" and e["path"] == "/ping"]
    summaries = [e for e in records if e["event"] == "ping_summary"]
    if interval == "0":
        assert (len(pings), summaries) == (PINGS, [])
    else:
        assert pings == []
        assert [s["count"] for s in summaries] == [PINGS]
        assert 0 <= summaries[0]["latency_ms_min"] <= summaries[0]["latency_ms_max"]
    (invocation,) = [e for e in records if e["event"] == "access" and e["path"] == "/invocations"]
    assert invocation["method"] == "POST"
    assert invocation["status"] == 200
    assert invocation["bytes"] == len(b"done 0 /invocations")
    assert invocation["latency_ms"] >= 0


def test_a_failed_ping_is_always_a_record(serve, tmp_path) -> None:
    """The negative twin: /ping answered 503 (the server still loading) is never collapsed."""
    run, port = serve("--load-gate", str(tmp_path / "never"), options=("--serve-drain-delay", "0"))
    wait_line(run, "listening")
    assert request(port, "GET", "/ping").status == 503
    run.signal(signal.SIGTERM)
    records = events(run.wait()[2])
    (ping,) = [e for e in records if e["event"] == "access" and e["path"] == "/ping"]
    assert ping["status"] == 503
    assert [e for e in records if e["event"] == "ping_summary"] == []


GUNICORN_OOM = (
    "[2026-12-07 21:00:00 +0000] [7] [ERROR] Worker (pid:34) was sent SIGKILL! Perhaps out of memory?\n"
)
TORCHSERVE = "2026-12-07T21:00:00,000 [INFO ] W-9000-model-stdout MODEL_LOG - Backend worker process died.\n"
BOOTING = "[2026-12-07 21:00:00 +0000] [7] [INFO] Booting worker with pid: 35\n"


def test_worker_deaths_are_recognized_where_the_server_says_so(serve) -> None:
    """gunicorn's OOM-suspected SIGKILL and TorchServe's "Backend worker process died" become
    worker_died events (pid, signal, the server's OOM hint); a worker booting (the twin) does not."""
    run, port = serve(options=("--serve-drain-delay", "0"))
    run.wait_event("serve_ready")
    for line in (BOOTING, GUNICORN_OOM, TORCHSERVE):
        assert request(port, "POST", "/say", line.encode()).status == 200
    run.signal(signal.SIGTERM)
    died = [e for e in events(run.wait()[2]) if e["event"] == "worker_died"]
    assert [(e["server"], e["cause"], e["pid"]) for e in died] == [
        ("gunicorn", "killed", 34),
        ("torchserve", "died", None),
    ]
    assert (died[0]["signal"], died[0]["oom_suspected"], died[0]["level"]) == ("SIGKILL", True, "warning")
