"""smsupervise-local keeps the failure class beside describe.json (``diagnosis.json``), never in it:
describe.json keeps DescribeTrainingJob's shape."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.local.conftest import described, needs_root, request, run


@needs_root
def test_a_failed_jobs_class_is_in_diagnosis_json_not_in_describe_json(tmp_path: Path) -> None:
    """The probe job fails with exit 1: FailureClass ExitCode for algo-1, the host that failed."""
    result = run(tmp_path, request(tmp_path, "fail"))
    assert result.returncode == 1, result.stderr
    body = orjson.loads((tmp_path / "work" / "diagnosis.json").read_bytes())
    assert body == {"FailureClass": "ExitCode", "FailedHost": "algo-1", "Hosts": {"algo-1": "ExitCode"}}
    assert "FailureClass" not in described(tmp_path)


@needs_root
def test_a_completed_job_has_no_failure_class(tmp_path: Path) -> None:
    """The twin: a job that succeeds has FailureClass null."""
    result = run(tmp_path, request(tmp_path, "metrics"))
    assert result.returncode == 0, result.stderr
    body = orjson.loads((tmp_path / "work" / "diagnosis.json").read_bytes())
    assert body == {"FailureClass": None, "FailedHost": None, "Hosts": {"algo-1": None}}
