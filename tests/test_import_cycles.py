"""No import cycles among graphgen's, the server's and the client's modules.

Imports inside functions count as much as module-level ones (a lazy import hides a cycle, it does
not remove it), and so do the command line's lazy command imports (``graphgen.cli.COMMANDS``, by
``importlib``). Only the edges in :data:`LAZY_IMPORTS` may close a cycle: the command line imports
a command's module after it has itself finished loading. The server's wings import only downward:
frontends over core over repository over the shared vocabulary (tensors, config).
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "graphgen": ROOT / "graphgen",
    "graphgen_server": ROOT / "server" / "graphgen_server",
    "graphgen_client": ROOT / "clients" / "graphgen_client",
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _statements(tree: ast.Module, nested: bool) -> list[ast.stmt]:
    """The module's statements; with ``nested``, those inside functions and classes too (never TYPE_CHECKING's)."""
    if not nested:
        return tree.body
    found: list[ast.stmt] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.stmt):
            found.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def _imports(path: Path, modules: dict[str, Path], nested: bool = False) -> set[str]:
    """The project modules a file imports when it is imported (not under TYPE_CHECKING; with
    ``nested``, also inside functions)."""
    targets: set[str] = set()
    for node in _statements(ast.parse(path.read_text(encoding="utf-8")), nested):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                targets.add(name)
    return targets


def _command_modules() -> set[str]:
    """The modules ``graphgen.cli`` imports by name when their command runs (its COMMANDS table)."""
    tree = ast.parse((PACKAGES["graphgen"] / "cli" / "__init__.py").read_text(encoding="utf-8"))
    return {
        call.args[1].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "Command"
        and isinstance(call.args[1], ast.Constant)
    }


# The edges that may close a cycle: graphgen.cli imports a command's module only once it has loaded itself.
LAZY_IMPORTS = {("graphgen.cli", module) for module in _command_modules()}


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph = {name: _imports(path, modules, nested=True) - {name} for name, path in modules.items()}
    graph["graphgen.cli"] |= {target for _, target in LAZY_IMPORTS}
    return graph


def test_no_module_imports_itself_back():
    modules = _modules()
    graph = _graph(modules)
    cycles = []

    def visit(name: str, trail: list[str], done: set[str]) -> None:
        for target in sorted(graph[name]):
            if target in trail:
                cycle = [*trail[trail.index(target) :], target]
                if not LAZY_IMPORTS & set(itertools.pairwise(cycle)):
                    cycles.append(" -> ".join(cycle))
            elif target not in done:
                visit(target, [*trail, target], done)
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name], done)
    assert not cycles, cycles
    assert len(modules) > 50 and graph["graphgen.build"]  # the walk saw the tree


def test_function_level_imports_count():
    """A lazy import inside a function is an edge; the allow-list names real modules, the commands' own."""
    modules = _modules()
    inside_functions = _imports(modules["graphgen.cli.build"], modules, nested=True)
    assert "graphgen.build" in inside_functions - _imports(modules["graphgen.cli.build"], modules)
    commands = {target for _, target in LAZY_IMPORTS}
    assert {"graphgen.cli.build", "graphgen.cli.convert", "graphgen.cli.profile"} <= commands <= set(modules)


# The server's wings, top to bottom: a module imports its own wing's and lower wings' modules only.
SERVER_WINGS = [("frontends",), ("core",), ("repository",), ("tensors", "config")]


def _wing(module: str) -> int | None:
    part = module.split(".")[1] if module.count(".") else ""
    return next((i for i, names in enumerate(SERVER_WINGS) if part in names), None)


def test_server_wings_import_only_downward():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        wing = _wing(name)
        if not name.startswith("graphgen_server.") or wing is None:
            continue  # (app, cli, __main__ sit above every wing)
        for target in _imports(path, modules, nested=True):
            target_wing = _wing(target) if target.startswith("graphgen_server.") else None
            if target.startswith("graphgen_server") and (target_wing is None or target_wing < wing):
                upward.append(f"{name} -> {target}")
    assert not upward, upward
    assert _wing("graphgen_server.core.runtime") == 1 and _wing("graphgen_server.frontends.grpc_kserve") == 0
