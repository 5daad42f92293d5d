"""What the gpu-marked tests share: a watchdog that turns a hang into a failure."""

from __future__ import annotations

import contextlib
import faulthandler
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def hang_guard(seconds: float) -> Iterator[None]:
    """Past ``seconds``, print every thread's traceback and exit the process with status 1.

    faulthandler's watchdog is a C thread: it fires even when the test is stuck inside CUDA, CUPTI or
    onnxruntime with the GIL released, where a Python-level timeout would never run. A hang then fails
    the run (``make gpu-check`` reports it) instead of holding the device until its lease runs out.
    """
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
