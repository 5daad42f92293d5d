"""Markers set from what a test does, and the fixtures every folder shares.

Markers (registered in pyproject.toml; ``make test-fast`` runs ``-m "not e2e and not zoo and not gpu"``):

- ``e2e``: the test starts a graphgen server process or drives a browser. Set on every test in a
  folder named ``e2e`` and on every test whose function, fixtures or the repository's helpers they
  call by name use ``tests.support.server.ServerProcess`` (graphgen_client.local.LocalServer),
  run ``python -m graphgen_server`` / ``python -m graphgen_client.demo``, or open Playwright's
  ``sync_playwright`` (tests/support/markers.py).
  A test the rules miss cannot slip into the fast loop unnoticed: without ``e2e``, starting a
  server fails the test (``refusing_servers``).
- ``zoo``: a registry-wide sweep — a parametrization whose architectures (registered names or
  ``Architecture`` objects) cover at least half of the registry's architectures or half of its
  families (one representative each: the OpenVINO and ``--opset`` sweeps); and every test in
  ``tests/builder/models/``, the zoo's own folder (each family against its torch reference).
  New architectures and families join the sweeps by themselves; a hand-picked few
  (``FAMILIES`` of tests/builder/test_functions.py) stay in the fast loop.
- ``gpu``: needs a CUDA device; set by hand on those tests (they skip without one).

``make test`` and ``make test-fast`` run on both cores (pytest-xdist ``-n 2 --dist loadgroup``): the
sweeps' items spread over the workers, each module of end-to-end tests stays on one. After a test
that grew its process, the process hands the memory it freed back (tests/support/memory.py).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.markers import covers_the_registry, names_a_server, refusing_servers
from tests.support.memory import returning_freed_memory

# torch's threads in the tests that run a torch reference: both cores, or one per pytest-xdist worker
# (two workers on two cores each spinning two threads only contend).
TORCH_THREADS = 1 if "PYTEST_XDIST_WORKER" in os.environ else 2
ZOO_FOLDER = Path("tests/builder/models")


def unit_std_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference, on logits scaled so the reference has unit std."""
    return float(np.max(np.abs(actual - expected)) / max(float(np.std(expected)), 1e-12))


@pytest.fixture(scope="session")
def ort_cpu():
    import onnxruntime as ort

    def session(path):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    return session


def _starts_a_server(item: pytest.Item) -> bool:
    if "e2e" in item.path.relative_to(item.config.rootpath).parts:
        return True
    functions: list[object] = [getattr(item, "obj", None)]
    fixture_info = getattr(item, "_fixtureinfo", None)
    if fixture_info is not None:
        functions += [definitions[-1].func for definitions in fixture_info.name2fixturedefs.values() if definitions]
    return any(names_a_server(function) for function in functions)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from graphgen import registry

    values: dict[tuple[str, str, str], list[object]] = defaultdict(list)  # (file, test, argument) -> its values
    for item in items:
        if _starts_a_server(item):
            item.add_marker(pytest.mark.e2e)
            # One worker runs a module's end-to-end tests (pytest-xdist's --dist loadgroup): its
            # module-scoped server starts once, and a test that reads what the module's earlier
            # tests did to that server (the fuzz tests' "the server survived") reads it there.
            item.add_marker(pytest.mark.xdist_group(item.path.relative_to(config.rootpath).as_posix()))
        for argument, value in _parameters(item).items():
            values[(*_test(item), argument)].append(value)
    architectures = registry.architectures()
    sweeps = {key for key, seen in values.items() if covers_the_registry(seen, architectures)}
    for item in items:
        in_the_zoo = ZOO_FOLDER in item.path.relative_to(config.rootpath).parents
        if in_the_zoo or any((*_test(item), argument) in sweeps for argument in _parameters(item)):
            item.add_marker(pytest.mark.zoo)


def _test(item: pytest.Item) -> tuple[str, str]:
    return item.path.as_posix(), getattr(item, "originalname", item.name)


def _parameters(item: pytest.Item) -> dict[str, object]:
    callspec = getattr(item, "callspec", None)
    return dict(callspec.params) if callspec is not None else {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    # the full-size models' tests left 10-14 GB per worker behind them (tests/support/memory.py)
    with returning_freed_memory():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _guarded(item))


def _guarded(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("e2e") is not None:
        return (yield)
    with refusing_servers(item.nodeid):
        return (yield)
