"""One owner per kernel resource, enforced by reading the source (architecture.md 3.1 and habit 3)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "supervisor" / "smsupervise"
OWNERS = {
    "waitpid": "core/reaper.py",
    "posix_spawn": "core/spawn.py",
    "posix_spawnp": "core/spawn.py",
    "fork": None,  # nobody forks
    "signal": "core/signals.py",  # signal.signal(...)
    "splice": "pipemode/relay.py",
}


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            if isinstance(base, ast.Name) and base.id in ("os", "signal"):
                names.add(f"{base.id}.{node.func.attr}")
    return names


# Not part of the supervisor: a helper that runs inside the user's training process.
IN_THE_USERS_PROCESS = {"checkpoint.py"}


def _modules() -> dict[str, set[str]]:
    return {
        str(p.relative_to(PACKAGE)): _calls(p)
        for p in PACKAGE.rglob("*.py")
        if str(p.relative_to(PACKAGE)) not in IN_THE_USERS_PROCESS
    }


def test_the_checkpoint_helper_imports_nothing_but_the_stdlib() -> None:
    """smsupervise.checkpoint runs in the user's interpreter: no uvloop, orjson, or our modules."""
    tree = ast.parse((PACKAGE / "checkpoint.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported <= {"__future__", "os", "signal", "collections", "types"}, imported


@pytest.mark.parametrize("call", ["os.waitpid", "os.posix_spawn", "os.fork", "signal.signal", "os.splice"])
def test_each_kernel_resource_has_one_owner(call: str) -> None:
    """Only the owning module makes this call (a second waitpid caller would steal statuses)."""
    owner = OWNERS[call.split(".")[1]]
    callers = {module for module, calls in _modules().items() if call in calls}
    assert callers <= ({owner} if owner else set()), callers


def test_no_module_uses_subprocess_or_asyncio_child_watchers() -> None:
    """subprocess.Popen and asyncio's subprocess API would call waitpid behind our back."""
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        assert "import subprocess" not in source, path
        assert "create_subprocess" not in source, path
        assert "subprocess_exec" not in source, path


def test_importing_the_package_does_no_work() -> None:
    """No module reads the environment or touches the disk at import time (habit 7)."""
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # a docstring
            if isinstance(node, ast.Expr | ast.Assign | ast.AnnAssign):
                text = ast.unparse(node)
                assert "os.environ" not in text, (path, text)
                assert "open(" not in text, (path, text)


@pytest.mark.parametrize("call", ["os.waitpid", "os.posix_spawn", "signal.signal"])
def test_the_owner_really_makes_the_call(call: str) -> None:
    """The negative twin: the owner table names modules that do make these calls."""
    owner = OWNERS[call.split(".")[1]]
    assert owner is not None
    assert call in _modules()[owner]
