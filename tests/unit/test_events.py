"""The event vocabulary (``streams/vocabulary.EVENTS``) against the code and the docs' event tables, both
ways: every name the code writes is declared, every declared name is written somewhere and documented, and the
docs document nothing else. Event names are literals at their call sites (a name built at run time could not
be checked); what other threads report comes as typed records (the Pipe relay's ``RelayEvent``), named where
they are logged."""

from __future__ import annotations

import ast
import re

from smsupervise.streams.vocabulary import EVENTS
from tests.conftest import ROOT

PACKAGE = ROOT / "supervisor" / "smsupervise"
# Other tools' own vocabularies, not PID 1's events (smsupervise-local, the Pipe tools, the bench).
OTHER_TOOLS = ("local/", "pipebench/", "pipemode/emulate.py")
LEVELS = {"debug", "info", "warning", "error"}


def emitted(source: str) -> tuple[set[str], int]:
    """Event names written by ``source`` (log calls, a plan's ``Note``), and how many event calls name
    theirs with something other than a literal."""
    names, dynamic = set(), 0
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func, arg = node.func, None
        if isinstance(func, ast.Attribute) and func.attr in LEVELS and node.args:
            arg = node.args[0]
        elif isinstance(func, ast.Name) and func.id == "Note" and len(node.args) >= 2:
            arg = node.args[1]
        if arg is None:
            continue
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            names.add(arg.value)
        else:
            dynamic += 1
    return names, dynamic


def _modules() -> dict[str, str]:
    return {
        str(path.relative_to(PACKAGE)): path.read_text()
        for path in PACKAGE.rglob("*.py")
        if not str(path.relative_to(PACKAGE)).startswith(OTHER_TOOLS)
    }


def documented() -> set[str]:
    """The names in the docs' event tables: every table under docs/ whose header's first cell is
    ``event`` (docs/events.md for the core, a wing's own page for its events, e.g. docs/serve.md)."""
    names: set[str] = set()
    for page in sorted((ROOT / "docs").glob("*.md")):
        in_table = False
        for line in page.read_text().splitlines():
            if re.match(r"^\| event \|", line):
                in_table = True
                continue
            if in_table and not line.startswith("|"):
                in_table = False
            match = re.match(r"^\| (`[a-z_]+`(?: / `[a-z_]+`)*) \|", line) if in_table else None
            if match:
                names |= set(re.findall(r"`([a-z_]+)`", match.group(1)))
    return names


def test_every_event_the_code_writes_is_declared() -> None:
    """No module writes a name the vocabulary lacks."""
    undeclared = {
        f"{module}: {name}" for module, source in _modules().items() for name in emitted(source)[0] - EVENTS
    }
    assert not undeclared, f"declare these in streams/vocabulary.py and docs/events.md: {sorted(undeclared)}"


def test_every_declared_event_is_written_somewhere() -> None:
    """No dead names: each declared event is written by some module."""
    written = set().union(*(emitted(source)[0] for source in _modules().values()))
    assert EVENTS - written == set()


def test_the_docs_document_exactly_the_vocabulary() -> None:
    """The docs' event tables and the vocabulary name the same events."""
    docs = documented()
    assert EVENTS - docs == set(), "declared but in no event table under docs/"
    assert docs - EVENTS == set(), "in an event table under docs/ but not declared"


def test_event_names_are_literals_where_they_are_made() -> None:
    """No module names an event with a variable (so the scan above sees every name)."""
    assert {module for module, source in _modules().items() if emitted(source)[1]} == set()


def test_the_scan_sees_each_way_of_writing_an_event() -> None:
    """The twin of the checks above: the scanner finds names in every form, and flags a dynamic one."""
    source = (
        'log.info("a_started", x=1)\nself.log.error("b_failed")\nNote("warning", "c_noted", {})\n'
        "log.warning(name)\n"
    )
    names, dynamic = emitted(source)
    assert names == {"a_started", "b_failed", "c_noted"}
    assert dynamic == 1
    assert names - EVENTS  # made-up names are not declared: the first test would fail on them
