"""Which stop signal is "second": after a stop smsupervise began itself (--max-runtime here; the
fail-fast mesh takes the same path), the first EXTERNAL SIGTERM is the platform's own stop arriving
late (the local runner's SIGTERM to every host's PID 1 after a host failed), not a second request:
the checkpoint hook must finish. Only a further external signal cuts the checkpoint step short.
As PID 1 of a fresh PID namespace and as a subreaper."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.conftest import Supervised, events, sleep_until
from tests.process.test_stop import SLOW, _start
from tests.sagemaker import fixtures


def _hook(tmp: Path) -> str:
    """A hook that says it started and finishes once the test releases it."""
    return (
        f"sh -c 'touch {tmp}/hook-started; while [ ! -e {tmp}/release ]; do sleep 0.02; done; "
        f"touch {tmp}/hook-done'"
    )


def _run(mode: str, tmp: Path, internal_first: bool) -> Supervised:
    base = fixtures.example(tmp, **SLOW)
    limits = ("--checkpoint-timeout", "50", "--grace-period", "20")
    runtime = ("--max-runtime", "1") if internal_first else ()
    run = _start(mode, base, *runtime, "--checkpoint-hook", _hook(tmp), *limits, "train")
    if not internal_first:
        sleep_until(lambda: run.catching(signal.SIGTERM), what="the SIGTERM handler")
        sleep_until(lambda: (base / "checkpoints").exists(), what="training to start")
        run.signal(signal.SIGTERM)
    sleep_until(lambda: (tmp / "hook-started").exists(), what="the checkpoint hook to start")
    return run


def _stop(err: bytes) -> str:
    """The ``exiting`` event's account of the stop (how the checkpoint step ended)."""
    exiting = [e for e in events(err) if e["event"] == "exiting"]
    assert exiting, err.decode(errors="replace")[-3000:]
    return str(exiting[-1]["stop"])


@pytest.mark.parametrize("mode", ["subreaper", pytest.param("pid1", marks=pytest.mark.pid1)])
def test_the_first_external_sigterm_after_an_internal_stop_lets_the_hook_finish(
    mode: str, tmp_path: Path
) -> None:
    """--max-runtime begins the stop; a SIGTERM from outside arrives while the hook runs: it is
    received, the stop goes on, and the hook finishes (the exiting event says so)."""
    run = _run(mode, tmp_path, internal_first=True)
    try:
        run.signal(signal.SIGTERM)
        received = run.wait_event("signal_received")
        (tmp_path / "release").touch()
        _code, _out, err = run.wait()
    finally:
        if run.proc.poll() is None:
            run.kill()
    assert received["signal"] == "SIGTERM"
    assert "stop_advanced" not in [e["event"] for e in events(err)]
    assert "checkpoint hook finished in" in _stop(err)
    assert (tmp_path / "hook-done").exists()


@pytest.mark.parametrize("mode", ["subreaper", pytest.param("pid1", marks=pytest.mark.pid1)])
@pytest.mark.parametrize("internal_first", [True, False])
def test_a_second_external_sigterm_still_cuts_the_hook_short(
    mode: str, tmp_path: Path, internal_first: bool
) -> None:
    """The negative twins: after an internal stop, two external SIGTERMs; after an external stop,
    one more: the last one cuts the checkpoint step short (the exiting event says by what)."""
    run = _run(mode, tmp_path, internal_first)
    try:
        if internal_first:
            run.signal(signal.SIGTERM)
            run.wait_event("signal_received")
        run.signal(signal.SIGTERM)
        run.wait_event("stop_advanced")
        _code, _out, err = run.wait()
    finally:
        if run.proc.poll() is None:
            run.kill()
    assert "cut short after" in _stop(err)
    assert "by a second stop signal" in _stop(err)
    assert not (tmp_path / "hook-done").exists()
