"""A test's freed memory goes back to the system before the next test (tests/support/memory.py)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from tests.support import memory

MIB = 2**20
pytestmark = pytest.mark.skipif(memory.resident_bytes() is None, reason="no /proc/self/statm: not Linux")


class Cycle:
    """What an onnx_ir model is to the collector: objects that point at each other, holding tensors."""

    def __init__(self, payload: np.ndarray) -> None:
        self.payload = payload
        self.me = self


def test_a_test_that_leaves_a_cycle_behind_hands_its_memory_back():
    gc.disable()  # the cycle must wait for the hand-back, not for a collection that happens to come
    try:
        start = memory.resident_bytes()
        with memory.returning_freed_memory(growth=64 * MIB):
            Cycle(np.ones(256 * MIB // 8))  # written, so resident
            assert memory.resident_bytes() - start > 200 * MIB  # unreachable, and still held
        assert memory.resident_bytes() - start < 64 * MIB
    finally:
        gc.enable()


def test_a_test_that_did_not_grow_the_process_costs_no_collection(monkeypatch):
    collections = []
    monkeypatch.setattr(memory, "hand_back_freed_memory", lambda: collections.append(1))
    with memory.returning_freed_memory(growth=64 * MIB):
        np.ones(MIB // 8)
    assert not collections
    with memory.returning_freed_memory(growth=64 * MIB):
        kept = np.ones(128 * MIB // 8)
    assert collections == [1]
    del kept
