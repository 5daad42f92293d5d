"""How disturbed a profile's runs were: the time its threads waited for a CPU, run by run.

On a busy machine a kernel's time includes the time its threads were ready to run but the
scheduler ran something else. Linux counts that per thread (``/proc/<pid>/task/<tid>/schedstat``:
time on a CPU, time waiting on a run queue, in ns; ``CONFIG_SCHED_INFO``, on in every common
kernel). The threads a profile runs on are the thread that calls ``run`` and the intra-op pool
threads onnxruntime made while building the session (found as the process's threads that appeared
during the build). A run's *wait share* = their run-queue wait ÷ (wait + time on a CPU) during
the run: 0 when they always had a CPU when they wanted one, 0.5 when they waited as long as they ran.
Where schedstat cannot be read (not Linux), nothing is measured and the profile says so.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

DISTURBED_SHARE = 0.10  # a run whose threads waited more than this share of their runnable time is disturbed


def process_threads() -> set[int]:
    """The OS thread ids of this process (empty where /proc cannot be read)."""
    try:
        return {int(entry.name) for entry in Path(f"/proc/{os.getpid()}/task").iterdir()}
    except OSError:
        return set()


def _schedstat(tid: int) -> tuple[int, int] | None:
    """(ns on a CPU, ns waiting on a run queue) of thread ``tid`` so far; None if it is gone or unreadable."""
    try:
        running, waiting, _ = Path(f"/proc/{os.getpid()}/task/{tid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return int(running), int(waiting)


class CpuWaits:
    """The run-queue waits of a set of threads, read before and after each run."""

    def __init__(self, threads: Iterable[int]) -> None:
        self.threads = sorted(set(threads))
        self.available = bool(self.threads) and _schedstat(self.threads[0]) is not None
        self.shares: list[float] = []  # per measured run
        self._last: dict[int, tuple[int, int]] = {}

    @classmethod
    def of_session(cls, pool: Iterable[int]) -> CpuWaits:
        """The calling thread and a session's pool threads."""
        return cls({threading.get_native_id(), *pool})

    def start(self) -> None:
        self._last = {tid: stat for tid in self.threads if (stat := _schedstat(tid)) is not None}

    def stop(self) -> float:
        """The wait share since :meth:`start` (0 where nothing ran), kept in :attr:`shares`."""
        ran = waited = 0
        for tid, (running, waiting) in self._last.items():
            now = _schedstat(tid)
            if now is not None:
                ran += now[0] - running
                waited += now[1] - waiting
        share = waited / (ran + waited) if ran + waited > 0 else 0.0
        self.shares.append(share)
        return share
