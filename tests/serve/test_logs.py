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
