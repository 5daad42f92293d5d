"""Tests of the largest architectures take turns across pytest-xdist's workers.

At its peak a test of VGG-19 or EfficientNet-V2-L holds the model several times over (the graph, its
serialized bytes, an onnxruntime session, the torch reference): 9-12 GB per worker were measured, and
two such tests at once, one on each worker, took this 24 GiB machine to the kernel's OOM killer. A test
parametrized with one of them holds a lock file shared by the workers of the run, so at most one runs
at a time; every other test still runs beside it.
"""

from __future__ import annotations

import fcntl
import functools
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

HEAVY_PARAMS = 80_000_000  # VGGs, Wide ResNet-101, RepVGG-B2/B3, EfficientNet-V2-L, SENet-154, ParNet-XL...


@functools.cache
def heavy_architectures() -> frozenset[str]:
    from graphgen import registry

    return frozenset(a.name for a in registry.architectures() if (a.reference_params or 0) > HEAVY_PARAMS)


def is_heavy(parameter_values: Iterable[object]) -> bool:
    """Whether a test's parameters name one of the heavy architectures (by name or as the row itself)."""
    return any(getattr(value, "name", value) in heavy_architectures() for value in parameter_values)


@contextmanager
def taking_turns() -> Iterator[None]:
    """Hold the run's lock for heavy tests (pytest-xdist names the run; without it one process runs all)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        yield
        return
    with (Path(tempfile.gettempdir()) / f"graphgen-tests-heavy-{run}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
