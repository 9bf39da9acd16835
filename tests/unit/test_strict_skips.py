"""``SMSUPERVISE_STRICT_SKIPS=1`` turns every skip (in a test, a fixture, a module's ``pytestmark`` or an
``importorskip`` at import) into a failure that names the reason; without it a skip stays a skip."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SKIPPING = """
import pytest

def test_in_the_body():
    pytest.skip("needs the moon")

@pytest.mark.skipif(True, reason="needs the sun")
def test_by_marker():
    pass

def test_runs():
    assert True

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    raise AssertionError
"""
IMPORTING = """
import pytest
pytest.importorskip("no_such_module_at_all", reason="needs the stars")

def test_never():
    pass
"""


def _pytest(tmp_path: Path, source: str, strict: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_file.py").write_text(source)
    env = {**os.environ, "SMSUPERVISE_STRICT_SKIPS": strict, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.strict_skips",
            "-q",
            "-rA",
            "--no-header",
            "-p",
            "no:cacheprovider",
            "-c",
            os.devnull,
            "-W",
            "ignore::DeprecationWarning",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )


def test_skips_in_tests_fail_when_strict(tmp_path: Path) -> None:
    """A skip in the body (a failure) and one by marker (an error in setup) both name their reasons;
    xfail is untouched."""
    done = _pytest(tmp_path, SKIPPING, "1")
    assert done.returncode == 1, done.stdout
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in done.stdout, done.stdout
    assert "needs the moon" in done.stdout
    assert "needs the sun" in done.stdout


def test_a_skip_at_import_fails_when_strict(tmp_path: Path) -> None:
    """``importorskip`` at a module's import (a collection-time skip) is an error naming the reason."""
    done = _pytest(tmp_path, IMPORTING, "1")
    assert done.returncode != 0, done.stdout
    assert "needs the stars" in done.stdout
    assert "skipped where every test must run" in done.stdout


@pytest.mark.parametrize("source", [SKIPPING, IMPORTING], ids=["tests", "import"])
def test_skips_stay_skips_otherwise(tmp_path: Path, source: str) -> None:
    """The twin: without the variable the same files pass with their skips."""
    done = _pytest(tmp_path, source, "")
    assert done.returncode in {0, 5}, done.stdout  # 5: pytest's "no test ran" (all skipped)
    assert re.search(r"\d+ skipped", done.stdout), done.stdout
    assert not re.search(r"\d+ (failed|error)", done.stdout), done.stdout
