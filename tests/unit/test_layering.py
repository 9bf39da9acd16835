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


def _imports(path: Path) -> set[str]:
    """Every smsupervise module a file imports, at any depth (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    parents = {".".join(name.split(".")[:i]) for name in found for i in range(1, name.count(".") + 1)}
    return {name for name in found | parents if name.split(".")[0] == "smsupervise"}


def _file(module: str) -> Path | None:
    parts = module.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    relative = Path(*parts)
    for candidate in (PACKAGE / relative.with_suffix(".py"), PACKAGE / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def supervisor_closure() -> set[str]:
    """The supervisor's own files: everything reachable by imports from ``smsupervise.cli``.

    Tools with console scripts of their own (``smsupervise-local``, the Pipe emulator) are outside
    it unless the supervisor imports them, and may use ``subprocess``.
    """
    seen: set[Path] = set()
    todo = [PACKAGE / "cli.py", PACKAGE / "__main__.py", PACKAGE / "__init__.py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [f for module in _imports(path) if (f := _file(module)) is not None]
    return {str(p.relative_to(PACKAGE)) for p in seen}


def _modules() -> dict[str, set[str]]:
    closure = supervisor_closure()
    return {
        str(p.relative_to(PACKAGE)): _calls(p)
        for p in PACKAGE.rglob("*.py")
        if str(p.relative_to(PACKAGE)) in closure - IN_THE_USERS_PROCESS
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


def _subprocess_users(names: set[str]) -> set[str]:
    words = ("import subprocess", "create_subprocess", "subprocess_exec")
    return {name for name in names if any(word in (PACKAGE / name).read_text() for word in words)}


def test_no_supervisor_module_uses_subprocess_or_asyncio_child_watchers() -> None:
    """subprocess.Popen and asyncio's subprocess API would call waitpid behind the supervisor's back."""
    assert _subprocess_users(supervisor_closure()) == set()


def test_the_subprocess_rule_bites_inside_the_supervisor_and_only_there() -> None:
    """The negative twin: the closure holds the core; the local runner (outside it) uses subprocess."""
    closure = supervisor_closure()
    assert {"core/spawn.py", "core/reaper.py", "sagemaker/plan.py", "app.py"} <= closure
    assert not any(name.startswith("local/") for name in closure)
    assert "local/run.py" in _subprocess_users({"local/run.py"})


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
