"""Hand the memory a test freed back to the system before the next test starts.

A pytest process kept what its tests were done with: measured over the simplifier sweep of the
AlexNets, RepVGGs, VGGs and Wide ResNets in one process, it held 15 GB after the VGG-19s (3 GB
with this), and two pytest-xdist workers holding 10-14 GB each ran a 24 GiB machine out of memory.
Two things held it:

- an onnx_ir model is a web of reference cycles (graph, nodes and values point at each other), so
  only the cyclic collector frees it, and its full pass comes rarely;
- glibc keeps freed heap pages for its next allocations; ``malloc_trim(0)`` gives the whole free
  pages of every arena back.

Both run only after a test that grew the process, so the many small tests pay nothing.
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GROWTH = 64 * 2**20  # a test that grew the process by more than this has its garbage collected


def resident_bytes() -> int | None:
    """This process's resident memory, or None where /proc cannot tell (not Linux)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None under another C library (musl, macOS)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None


MALLOC_TRIM = _malloc_trim()


def hand_back_freed_memory() -> None:
    """Free the unreachable cycles, then return the free heap pages to the system."""
    gc.collect()
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


@contextmanager
def returning_freed_memory(growth: int = GROWTH) -> Iterator[None]:
    """Around one test: if the process grew by more than ``growth`` bytes, hand its freed memory back."""
    before = resident_bytes()
    try:
        yield
    finally:
        after = resident_bytes()
        if before is not None and after is not None and after - before > growth:
            hand_back_freed_memory()
