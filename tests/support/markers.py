"""Which tests run end to end (a server process, a browser: ``e2e``) and which sweep the registry (``zoo``).

tests/conftest.py sets both markers from these rules at collection, so nobody has to remember
them, and fails at run time any test that starts a server without ``e2e`` (the rules missed it:
fix the rule or move the test under an ``e2e`` folder). ``make test-fast`` deselects both.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import subprocess
import types
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from graphgen.registry import Architecture

ROOT = Path(__file__).resolve().parents[2]
# Names whose use starts a server process (tests/support/server.py's name for graphgen_client.local's
# class) or a browser (Playwright driving chromium).
END_TO_END_NAMES = frozenset({"ServerProcess", "LocalServer", "sync_playwright"})
# `python -m MODULE` for these starts a server (the demo serves the model it classifies with).
SERVER_MODULES = frozenset({"graphgen_server", "graphgen_client.demo"})
# A parametrization is a registry-wide sweep when its architectures cover this share of the registry's
# architectures, or of its families (one architecture per family: the OpenVINO and --opset sweeps).
ZOO_SHARE = 0.5


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_objects(constant)


def _ours(function: Callable[..., Any]) -> bool:
    """Code of this repository (tests, bench, the packages), not of a library in the environment."""
    return _our_file(getattr(getattr(function, "__code__", None), "co_filename", "/"))


@functools.cache
def _our_file(name: str) -> bool:
    filename = Path(name)
    return filename.is_relative_to(ROOT) and ".venv" not in filename.relative_to(ROOT).parts


# Verdicts on the functions asked about (tests, fixtures): a parametrized test or a shared fixture is
# asked once per item, and walking what it calls each time took seconds of every collection.
_verdicts: dict[types.CodeType, bool] = {}


def names_a_server(function: object, seen: set[types.CodeType] | None = None) -> bool:
    """``function``, or a function of this repository it calls by name, names a way to start a server.

    That is: ServerProcess/LocalServer, or ``"-m"`` with a server module among its constants
    (``[sys.executable, "-m", "graphgen_server", ...]``). Followed through module-level names only,
    which is how the tests reach their helpers (fixtures are followed by the caller).
    """
    function = inspect.unwrap(function) if callable(function) else function
    code = getattr(function, "__code__", None)
    if code is None or not _ours(function):  # type: ignore[arg-type]
        return False
    if seen is None:
        if code not in _verdicts:
            _verdicts[code] = names_a_server(function, set())
        return _verdicts[code]
    if code in seen:
        return False
    seen.add(code)
    names: set[str] = set()
    constants: set[object] = set()
    for each in _code_objects(code):
        names.update(each.co_names)
        constants.update(c for c in each.co_consts if isinstance(c, str))
    if names & END_TO_END_NAMES or ("-m" in constants and constants & SERVER_MODULES):
        return True
    scope = getattr(function, "__globals__", {})
    return any(names_a_server(callee, seen) for name in names for callee in _callees(scope.get(name)))


def _callees(value: object) -> list[object]:
    """A function, or a class's methods (a helper class that starts servers, as bench/replicas.py's)."""
    if inspect.isfunction(value):
        return [value]
    if inspect.isclass(value):
        return [member for member in vars(value).values() if inspect.isfunction(member)]
    return []


def starts_a_server(argv: Sequence[str] | str) -> bool:
    """A command line that starts a graphgen server: ``python -m graphgen_server``, ``graphgen-server``, the demo."""
    args = [argv] if isinstance(argv, str) else [str(arg) for arg in argv]
    if args and Path(args[0]).name == "graphgen-server":
        return True
    return any(flag == "-m" and module in SERVER_MODULES for flag, module in itertools.pairwise(args))


@contextmanager
def refusing_servers(nodeid: str) -> Iterator[None]:
    """While the block runs, starting a server process raises: the test is not marked ``e2e``."""
    original = subprocess.Popen.__init__

    def guarded(self: subprocess.Popen, args: Any, *rest: Any, **options: Any) -> None:
        if starts_a_server(args):
            raise AssertionError(
                f"{nodeid} starts a graphgen server but is not marked e2e: move it under an e2e folder, "
                "start the server with tests.support.server.ServerProcess, or extend tests/support/markers.py"
            )
        original(self, args, *rest, **options)

    subprocess.Popen.__init__ = guarded  # type: ignore[method-assign]
    try:
        yield
    finally:
        subprocess.Popen.__init__ = original  # type: ignore[method-assign]


def covers_the_registry(values: Iterable[object], architectures: Collection[Architecture]) -> bool:
    """Parameter values (registered names, Architecture objects) that stand for at least ZOO_SHARE of
    the registry's architectures, or of its families."""
    by_name = {architecture.name: architecture for architecture in architectures}
    names = {
        value.name if isinstance(value, Architecture) else value
        for value in values
        if isinstance(value, str | Architecture)
    }
    covered = [by_name[name] for name in names if name in by_name]
    families = {architecture.family for architecture in by_name.values()}
    covered_families = {architecture.family for architecture in covered}
    return len(covered) >= ZOO_SHARE * len(by_name) or len(covered_families) >= ZOO_SHARE * len(families)
