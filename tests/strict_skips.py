"""A skip is a failure where the whole suite must run (``SMSUPERVISE_STRICT_SKIPS=1``: ``make test`` as root
with apt, and so CI). A green run then proves that every test ran: torch, MPI, podman, the toolkit and the
SDK included. Elsewhere (not root, no apt) skips stay skips, each with its reason. trio's
``skip_if_optional_else_raise`` is the same habit."""

from __future__ import annotations

import os
from typing import Any

import pytest

STRICT = "SMSUPERVISE_STRICT_SKIPS"


def _strict() -> bool:
    return os.environ.get(STRICT, "") == "1"


def _reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail(report: Any) -> None:
    reason = _reason(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"skipped where every test must run ({STRICT}=1, set by `make test` as root): {reason}\n"
        "install what it names (the Makefile's `deps`, `torch`, `mpi`, `plot`, `s3`, `toolkit`, `sdk` do)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if _strict() and report.skipped and not hasattr(report, "wasxfail"):
        _fail(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    outcome = yield
    report = outcome.get_result()
    if _strict() and report.skipped:
        _fail(report)
