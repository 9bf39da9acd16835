"""The serve front's configuration: health checks, path maps, the server's port, the stop budget."""

from __future__ import annotations

import socket

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsupervise import parsers
from smsupervise.errors import UsageError
from smsupervise.serve import config
from smsupervise.settings import Settings


def test_health_check_forms() -> None:
    """A path, METHOD PATH, and METHOD PATH @FILE TYPE are read; the body file is made absolute."""
    assert parsers.health_check("/health", "x") == parsers.HealthCheck("GET", "/health")
    assert parsers.health_check("post /invocations @p.json application/json", "x") == parsers.HealthCheck(
        "POST", "/invocations", parsers.os.path.abspath("p.json"), "application/json"
    )


@given(st.text(max_size=40))
def test_any_health_check_text_is_read_or_refused_by_name(text: str) -> None:
    """Whatever the text, the parser returns a check whose path starts with / or raises a
    UsageError naming the option; nothing else escapes."""
    try:
        check: parsers.HealthCheck | None = parsers.health_check(text, "--serve-health")
        refusal = ""
    except UsageError as error:
        check, refusal = None, str(error)
    assert check.path.startswith("/") if check is not None else "--serve-health" in refusal


@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=4))
def test_any_path_map_is_read_or_refused_by_name(pairs: list[tuple[str, str]]) -> None:
    """The class of map texts: each FROM=TO of /-paths is kept in order, anything else refused."""
    text = ",".join(f"{a}={b}" for a, b in pairs)
    try:
        mapped: tuple[tuple[str, str], ...] | None = parsers.path_map(text, "--serve-map")
        refusal = ""
    except UsageError as error:
        mapped, refusal = None, str(error)
    if mapped is None:
        assert "--serve-map" in refusal
    else:
        assert all(a.startswith("/") and b.startswith("/") for a, b in mapped)


def test_the_server_port_comes_from_the_safe_range_and_skips_taken_ones() -> None:
    """SAGEMAKER_SAFE_PORT_RANGE: the first free port; one taken is skipped; the front's own port
    is never chosen."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - as the server would
        port = taken.getsockname()[1]
        chosen = config.backend_port(None, {"SAGEMAKER_SAFE_PORT_RANGE": f"{port}-{port + 1}"}, 8080)
        assert chosen == port + 1
    assert config.backend_port(None, {"SAGEMAKER_SAFE_PORT_RANGE": "9000-9001"}, 9000) == 9001
    assert config.backend_port(7000, {}, 8080) == 7000


def test_a_bad_range_or_a_clash_is_refused_with_the_fix() -> None:
    """The negative twins: garbage in the range, and --serve-port equal to the front's port."""
    with pytest.raises(UsageError, match="SAGEMAKER_SAFE_PORT_RANGE='x'"):
        config.backend_port(None, {"SAGEMAKER_SAFE_PORT_RANGE": "x"}, 8080)
    with pytest.raises(UsageError, match="front's own port"):
        config.backend_port(8080, {}, 8080)


def test_the_default_check_follows_the_ping_mapping() -> None:
    """--serve-map /ping=/health makes the default health check GET /health; a named one stays."""
    settings = Settings.from_sources({"serve_front": True, "serve_map": (("/ping", "/health"),)}, {}, "serve")
    assert config.resolve(settings, {}).probe.path == "/health"
    named = settings._replace(serve_health=parsers.HealthCheck("GET", "/ready"))
    assert config.resolve(named, {}).probe.path == "/ready"


def test_the_drain_counts_in_the_stop_budget() -> None:
    """With the front, the default grace shrinks so drain delay + drain timeout + grace + leftover
    grace + margin fit 30 s; a drain that cannot fit is refused naming the options."""
    settings = Settings.from_sources({"serve_front": True}, {}, "serve")
    assert settings.grace_period == 30 - 5 - 10 - 5 - 5
    assert Settings.from_sources({}, {}, "serve").grace_period == 20  # the front off: unchanged
    with pytest.raises(UsageError, match="--serve-drain-delay 20"):
        Settings.from_sources({"serve_front": True, "serve_drain_delay": 20.0}, {}, "serve")


def test_the_also_processes_get_a_grace_period_of_their_own_in_the_budget() -> None:
    """--also: their stop and the main program's each get the grace period, both inside 30 s (the
    default grace halves); a grace given that cannot fit twice is refused naming --also's share."""
    settings = Settings.from_sources({"also": "/x.json"}, {}, "serve")
    assert settings.grace_period == (30 - 5 - 5) / 2
    with pytest.raises(UsageError, match="the --also processes' stop"):
        Settings.from_sources({"also": "/x.json", "grace_period": 15.0}, {}, "serve")
    assert Settings.from_sources({"grace_period": 15.0}, {}, "serve").grace_period == 15  # twin


LINES = (
    b"[x] [7] [CRITICAL] WORKER TIMEOUT (pid:12)\n"
    b"[x] [7] [ERROR] Worker (pid:34) was sent SIGKILL! Perhaps out of memory?\n"
    b"[x] [7] [INFO] Booting worker with pid: 35\n"
    b"[x] [7] [ERROR] Worker (pid:36) exited with code 3\n"
    b"MODEL_LOG - Backend worker process died.\n"
)


@given(st.lists(st.integers(min_value=0, max_value=len(LINES)), max_size=8))
def test_worker_deaths_are_found_however_the_output_is_cut(cuts: list[int]) -> None:
    """The class of chunkings: the same output cut anywhere gives the same four deaths, in order."""
    from smsupervise.serve.workers import WorkerWatch
    from smsupervise.streams.events import EventLog

    seen: list[bytes] = []
    log = EventLog()
    log.redirect(seen.append)
    watch = WorkerWatch(log)
    at = 0
    for cut in sorted(cuts):
        watch.follow("stderr", LINES[at:cut])
        at = cut
    watch.follow("stderr", LINES[at:])
    events = [orjson.loads(line) for line in seen]
    assert [(e["cause"], e["pid"]) for e in events] == [
        ("timeout", 12),
        ("killed", 34),
        ("exited", 36),
        ("died", None),
    ]


@given(st.binary(max_size=200))
def test_lines_without_the_servers_words_are_no_deaths(line: bytes) -> None:
    """The negative twin, as a class: any bytes without a marker report nothing."""
    from smsupervise.serve.workers import MARKERS, deaths

    if not any(marker in line for marker in MARKERS):
        assert deaths(line) == []
