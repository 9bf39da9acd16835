"""describe's FailureReason names the host that failed first, not the first to exit: a host stopped
by the fail-fast mesh (its log holds ``peer_failed`` naming the host that failed) is a victim, even
when it exits before the host that caused it (here that host is kept up by
--keep-alive-on-failure until the runner's stop, so the victim exits first every time)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.local.conftest import described, needs_root, request, run

JOB = """
import os, signal, sys
if os.environ["SM_CURRENT_HOST"] == os.environ["FAILING_HOST"]:
    print("about to fail", file=sys.stderr, flush=True)
    raise ValueError("the root cause on " + os.environ["SM_CURRENT_HOST"])
signal.pause()  # until the fail-fast stop's SIGTERM ends it (exit on the signal: a failed host too)
"""


def _body(tmp: Path, failing: str, keep_alive: bool) -> dict[str, object]:
    code = tmp / "code"
    code.mkdir(exist_ok=True)
    (code / "train.py").write_text(JOB)
    env = {"FAILING_HOST": failing}
    if keep_alive:
        env["SMSUPERVISE_KEEP_ALIVE_ON_FAILURE"] = "60"
    body = request(tmp, "fail", count=2, Environment=env)
    body["HyperParameters"].update(
        {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": f'"{code}"'}
    )
    return body


def _events(tmp: Path, host: str, name: str) -> list[dict[str, object]]:
    path = tmp / "work" / "logs" / f"{host}.jsonl"
    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return [r for r in records if r.get("event") == name]


@needs_root
def test_the_host_that_failed_is_named_though_a_victim_exited_first(tmp_path: Path) -> None:
    """algo-2 fails and is kept up; algo-1, stopped by the mesh, exits first with a non-zero code:
    FailureReason names algo-2 and its exception."""
    result = run(tmp_path, _body(tmp_path, "algo-2", keep_alive=True))
    assert result.returncode == 1, result.stderr
    assert [e["host"] for e in _events(tmp_path, "algo-1", "peer_failed")] == ["algo-2"]
    reason = described(tmp_path)["FailureReason"]
    assert reason.startswith("AlgorithmError: algo-2 exited with code 1"), reason
    assert "ValueError: the root cause on algo-2" in reason


@needs_root
@pytest.mark.parametrize("failing", ["algo-1", "algo-2"])
def test_a_host_that_fails_first_and_exits_first_is_named(tmp_path: Path, failing: str) -> None:
    """The negative twin: without the keep-alive the failing host (either one) exits first, and
    it is the one named."""
    result = run(tmp_path, _body(tmp_path, failing, keep_alive=False))
    assert result.returncode == 1, result.stderr
    reason = described(tmp_path)["FailureReason"]
    assert reason.startswith(f"AlgorithmError: {failing} exited with code 1"), reason
    assert f"ValueError: the root cause on {failing}" in reason
