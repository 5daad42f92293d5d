"""POSIX shared-memory objects for the shared-memory tests, removed when the block ends."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from multiprocessing import shared_memory


@contextlib.contextmanager
def shm_object(size: int, tag: str = "t") -> Iterator[shared_memory.SharedMemory]:
    """A fresh POSIX shared-memory object of ``size`` bytes (its ``name`` without the leading slash)."""
    block = shared_memory.SharedMemory(
        f"graphgen_test_{tag}_{os.getpid()}_{os.urandom(4).hex()}", create=True, size=size
    )
    try:
        yield block
    finally:
        block.close()
        block.unlink()
