"""The floor plan, enforced by reading the source: imports point down the layers, one owner per
kernel resource (architecture.md 3.1 and habit 3), and the supervisor process runs no subprocess."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "supervisor" / "smsupervise"
OWNERS = {
    "waitpid": "core/reaper.py",
    "wait4": "core/reaper.py",  # waitpid with the child's rusage (its peak RSS, for the diagnosis)
    "posix_spawn": "core/spawn.py",
    "posix_spawnp": "core/spawn.py",
    "fork": None,  # nobody forks
    "signal": "core/signals.py",  # signal.signal(...)
    "kill": "core/spawn.py",
    "killpg": "core/spawn.py",
    "pidfd_open": "core/spawn.py",
    "splice": "pipemode/pump.py",  # os.splice; the feeder's blocking one is libc's (linux/libc.py)
    "pthread_kill": "pipemode/feeder.py",  # the only thread signalled: a feeder, recalled
}

# Each layer may import from the layers below it (later in this list) and from itself; never up.
# A folder is a layer; top-level modules are layers of their own.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__", "debug.client", "debug.__main__"),  # console scripts (a dotted name is a module)
    ("cli",),
    ("app",),
    ("local", "debug", "pipebench", "serve"),
    ("sagemaker",),
    ("distributed",),  # below sagemaker: plan.decide() chooses torchrun/mpirun through it
    ("diagnose",),  # below sagemaker (outcome words its facts), above core (reads outcomes)
    ("core",),
    ("streams", "pipemode"),
    ("settings", "options"),
    ("parsers",),
    ("errors", "linux", "__init__"),
)

# Not part of the supervisor: a helper that runs inside the user's training process, and the
# modules only the smsupervise-debug client process imports (checked to be outside the closure).
IN_THE_USERS_PROCESS = {"checkpoint.py"}
IN_THE_DEBUG_CLIENT = {"debug/client.py", "debug/stacks.py"}


def _layer_of(module: str) -> int:
    """The index in LAYERS of a dotted module path below ``smsupervise``."""
    head = module.split(".", 1)[0]
    for index, names in enumerate(LAYERS):
        if module in names:
            return index
    for index, names in enumerate(LAYERS):
        if head in names:
            return index
    raise AssertionError(f"smsupervise.{module} is in no layer: add its folder to LAYERS")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _imports(source: str) -> set[str]:
    """Every ``smsupervise.X`` module a source imports (at any depth, lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smsupervise"):
            base = node.module.removeprefix("smsupervise").lstrip(".")
            if base:  # from smsupervise.core import spawn: core, and core.spawn if it is a module
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names}
            else:  # from smsupervise import x, y
                found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("smsupervise.") for a in node.names if a.name.startswith("smsupervise.")
            }
    return found


def _upward_imports(sources: dict[str, str]) -> list[str]:
    problems = []
    for module, source in sources.items():
        if module == "checkpoint":
            continue
        imports = _imports(source)
        for imported in sorted(imports):
            if (
                imported.split(".")[0] in {"__version__", "checkpoint"}
                or imported.rsplit(".", 1)[0] in imports
            ):
                continue
            if _layer_of(imported) < _layer_of(module):
                problems.append(f"smsupervise.{module} imports smsupervise.{imported}, a layer above it")
    return problems


def _package_sources() -> dict[str, str]:
    return {_module_name(p): p.read_text() for p in PACKAGE.rglob("*.py")}


def test_every_import_points_down_the_layers() -> None:
    """No module imports from a layer above its own, so there is no import circle."""
    assert _upward_imports(_package_sources()) == []


def test_the_layer_rule_bites() -> None:
    """The negative twin: a core module importing the SageMaker planning code is caught."""
    sources = {"core.supervise": "from smsupervise.sagemaker.plan import Plan\n"}
    assert _upward_imports(sources) == [
        "smsupervise.core.supervise imports smsupervise.sagemaker.plan, a layer above it"
    ]
    assert _upward_imports({"sagemaker.plan": "from smsupervise.core import spawn\n"}) == []


def _calls(tree: ast.AST) -> set[str]:
    """``os.x(...)``/``signal.x(...)`` calls, and names imported as ``from os import x``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            if isinstance(base, ast.Name) and base.id in ("os", "signal"):
                names.add(f"{base.id}.{node.func.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "signal"):
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _modules() -> dict[str, set[str]]:
    """The calls of every module of the supervisor process (the import closure of ``cli``): separate
    console scripts (``smsupervise-local``, ``smsupervise-debug``, the bench) are processes of their
    own, with kernel resources of their own."""
    closure = _closure("cli", _package_sources())
    return {
        str(p.relative_to(PACKAGE)): _calls(ast.parse(p.read_text()))
        for p in PACKAGE.rglob("*.py")
        if str(p.relative_to(PACKAGE)) not in IN_THE_USERS_PROCESS and _module_name(p) in closure
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
    assert imported <= {"__future__", "os", "signal", "collections", "types", "faulthandler"}, imported


@pytest.mark.parametrize(
    "call",
    [
        "os.waitpid",
        "os.wait4",
        "os.posix_spawn",
        "os.fork",
        "signal.signal",
        "os.splice",
        "os.kill",
        "os.killpg",
        "os.pidfd_open",
        "signal.pthread_kill",
    ],
)
def test_each_kernel_resource_has_one_owner(call: str) -> None:
    """Only the owning module makes this call (a second waitpid caller would steal statuses)."""
    owner = OWNERS[call.split(".")[1]]
    callers = {module for module, calls in _modules().items() if call in calls}
    assert callers <= ({owner} if owner else set()), callers


def test_the_owner_rule_sees_from_imports() -> None:
    """The negative twin of the owner rule: ``from os import waitpid`` is a call site too."""
    assert "os.waitpid" in _calls(ast.parse("from os import waitpid\nwaitpid(-1, 0)\n"))
    assert "os.killpg" in _calls(ast.parse("import os\nos.killpg(1, 15)\n"))


@pytest.mark.parametrize(
    "call", ["os.waitpid", "os.wait4", "os.posix_spawn", "signal.signal", "os.killpg", "os.splice"]
)
def test_the_owner_really_makes_the_call(call: str) -> None:
    """The negative twin: the owner table names modules that do make these calls."""
    owner = OWNERS[call.split(".")[1]]
    assert owner is not None
    assert call in _modules()[owner]


def _closure(start: str, sources: dict[str, str]) -> set[str]:
    """Every package module the supervisor process can import, starting from ``start``."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module in seen or module not in sources:
            continue  # not a module of ours (e.g. core.spawn.LaunchSpec, a name in a module)
        seen.add(module)
        for imported in _imports(sources[module]):
            todo += [imported, imported.rsplit(".", 1)[0], f"{imported}.__init__"]
    return seen


def _spawns_behind_our_back(source: str) -> bool:
    return any(word in source for word in ("import subprocess", "create_subprocess", "subprocess_exec"))


def test_the_supervisor_process_uses_no_subprocess_or_asyncio_child_watchers() -> None:
    """subprocess.Popen and asyncio's subprocess API would call waitpid behind our back: nothing the
    supervisor can import uses them (separate console scripts may)."""
    sources = _package_sources()
    closure = _closure("cli", sources)
    assert {"app", "core.supervise", "sagemaker.plan", "pipemode.relay"} <= closure
    offenders = sorted(module for module in closure if _spawns_behind_our_back(sources[module]))
    assert offenders == []


def test_the_subprocess_rule_bites_inside_the_closure() -> None:
    """The negative twin: a module the supervisor imports that uses subprocess is found."""
    sources = {"cli": "from smsupervise import app\n", "app": "import subprocess\n", "local.cli": ""}
    closure = _closure("cli", sources)
    assert closure == {"cli", "app"}
    assert [m for m in sorted(closure) if _spawns_behind_our_back(sources[m])] == ["app"]


def test_the_debug_client_is_another_process() -> None:
    """The modules exempted as the debug client's are outside the supervisor's closure, and do use
    what the supervisor may not (the exemption is needed, and hides no supervisor module)."""
    sources = _package_sources()
    closure = _closure("cli", sources)
    exempt = {name.removesuffix(".py").replace("/", ".") for name in IN_THE_DEBUG_CLIENT}
    assert not exempt & closure
    assert "debug.service" in closure  # the socket's server side is the supervisor's
    assert _spawns_behind_our_back(sources["debug.stacks"])


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


def _graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a package's name means its ``__init__``)."""
    modules = set(sources)
    graph: dict[str, set[str]] = {}
    for module, source in sources.items():
        edges = set()
        for imported in _imports(source):
            for candidate in (imported, f"{imported}.__init__"):
                if candidate in modules and candidate != module:
                    edges.add(candidate)
        graph[module] = edges
    return graph


def circles(sources: dict[str, str]) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module; Tarjan's algorithm,
    iterative), counting lazy and ``TYPE_CHECKING`` imports: a circle inside a folder too."""
    graph = _graph(sources)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circle_anywhere_not_even_inside_a_folder() -> None:
    """A folder is one layer, so the layer rule cannot see a circle inside it; this does."""
    assert circles(_package_sources()) == []


def test_a_circle_inside_a_folder_is_found() -> None:
    """The twin: two modules of one folder importing each other (one only for typing) are a circle."""
    sources = {
        "core.snapshot": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from smsupervise.core.supervise import Supervisor\n",
        "core.supervise": "from smsupervise.core.snapshot import describe\n",
        "core.spawn": "from smsupervise.core import status\n",
        "core.status": "",
    }
    assert circles(sources) == [["core.snapshot", "core.supervise"]]
