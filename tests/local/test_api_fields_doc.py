"""docs/local-api-fields.md stays the table of what smsupervise-local does with each field: every
top-level member of CreateTrainingJob in botocore's service model, and every field the runner
refuses or ignores, has a row (a new API field fails this test until it is placed)."""

from __future__ import annotations

import re

import pytest

from smsupervise.local import apimodel
from smsupervise.local import job as jobs
from tests.conftest import ROOT

DOC = ROOT / "docs" / "local-api-fields.md"


def _rows() -> str:
    return "\n".join(line for line in DOC.read_text().splitlines() if line.startswith("| `"))


def _named(rows: str, path: str) -> bool:
    """Whether a row names ``path``: whole (`A.B`) or as its last member after its parent's row
    (`A.B`, `C` names A.C)."""
    if f"`{path}`" in rows:
        return True
    parent, _, last = path.rpartition(".")
    return any(f"`{parent}." in row and f"`{last}`" in row for row in rows.splitlines())


def test_every_top_level_member_of_the_api_has_a_row() -> None:
    """Each member of CreateTrainingJobRequest in botocore's model is in the table."""
    shape = apimodel.input_shape("CreateTrainingJob")
    if shape is None:
        pytest.skip("botocore is not installed: pip install -e '.[local]'")
    rows = _rows()
    missing = [name for name in shape.members if not re.search(rf"`{name}[`.\[]", rows)]
    assert missing == []


@pytest.mark.parametrize("path", [*jobs.REFUSED, *jobs.IGNORED])
def test_every_refused_or_ignored_field_has_a_row(path: str) -> None:
    """The negative side: a field the code refuses or ignores is in the table, so the table
    cannot claim it is honoured."""
    rows = _rows()
    assert _named(rows, path), path
    row = next(r for r in rows.splitlines() if f"`{path.rpartition('.')[2]}`" in r or f"`{path}`" in r)
    assert ("Refused" if path in jobs.REFUSED else "ignored") in row
