"""The documents hold together: the README stays a short, user-first page, and every relative link in
it and in ``docs/`` (and ``benchmarks/README.md``) reaches a file that exists and a heading in it."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", text, re.M)}


def documents() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    bench = ROOT / "benchmarks" / "README.md"
    return [*found, bench] if bench.exists() else found


def broken_links(path: Path) -> list[str]:
    """Relative links in ``path`` whose file or anchor does not exist."""
    broken = []
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        where = (path.parent / file_part).resolve() if file_part else path
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif anchor and where.is_file() and anchor not in anchors(where):
            broken.append(f"{target}: no heading #{anchor} in {where.name}")
    return broken


def test_every_relative_link_reaches_its_file_and_heading() -> None:
    """README.md, docs/*.md, benchmarks/README.md: no link to a moved file or a renamed heading."""
    problems = {str(p.relative_to(ROOT)): broken_links(p) for p in documents()}
    assert {name: found for name, found in problems.items() if found} == {}


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    """The twin: a link to a missing file and one to a missing heading are both reported."""
    (tmp_path / "other.md").write_text("# Present\n")
    page = tmp_path / "page.md"
    page.write_text("# Top\n[a](other.md#present) [b](other.md#absent) [c](gone.md) [d](#top) [e](#nope)\n")
    assert broken_links(page) == [
        "other.md#absent: no heading #absent in other.md",
        "gone.md: no such file",
        "#nope: no heading #nope in page.md",
    ]


def test_the_readme_is_a_short_user_first_page() -> None:
    """At most ~300 lines, the two commands and the Dockerfile lines on its first screen (60 lines)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300
    first_screen = "\n".join(lines[:60])
    for must in ("make demo", "make test", 'ENTRYPOINT ["smsupervise"]'):
        assert must in first_screen
