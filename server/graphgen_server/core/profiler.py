"""Per-layer profiles of single requests, without slowing the requests that do not ask.

The profiler itself is graphgen's (:mod:`graphgen.profiling`: a profiling session per profile,
warm-up runs not counted, ``runs`` measured runs, per row the median and p10–p90 spread, joined
with the static layer table). What the server adds is keeping one profiling session per model
version built ahead: it is used by exactly one request, then a fresh one is built in the
background (a moment after the request, so that building it slows neither the request nor the
sending of its answer). A request that finds no session ready waits for it to be built: that
wait and the warm-up runs are reported as the profile's *setup* time, never as queue time.

Serving comes first: profiling sessions are built and run on a thread of the lowest CPU priority
(``nice`` 19; onnxruntime's pool threads, created by that thread, inherit it), so on a busy CPU
the kernel scheduler gives the cores to unprofiled requests. A profile taken while the server is
busy then has disturbed runs, and says so (its rows no longer add up to the median run).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from graphgen.profiling.session import DEFAULT_WARMUP_RUNS, ModelProfiler, ProfilingSession, Providers
from graphgen.profiling.summary import Profile

SPARE_DELAY_S = 0.05
PROFILE_NICE = 19  # the lowest CPU priority


def _lowest_priority() -> None:
    """Lower this thread's CPU priority (Linux: nice is per thread, inherited by threads it creates)."""
    with contextlib.suppress(AttributeError, OSError):  # no setpriority (not Unix) or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PROFILE_NICE)


@dataclass(frozen=True)
class ProfiledRun:
    outputs: list[np.ndarray]
    profile: Profile
    setup_s: float  # waiting for the profiling session to be built, and its warm-up runs
    run_s: float  # the measured runs, wall time


class Profiler:
    """The profiling sessions of one model version: one kept ready, each used for one request."""

    def __init__(
        self,
        model_path: Path,
        providers: Providers,
        make_options: Callable[[], ort.SessionOptions],
        warmup: dict[str, np.ndarray],
        warmup_runs: int = DEFAULT_WARMUP_RUNS,
    ) -> None:
        self._core = ModelProfiler(model_path, providers, make_options)
        self._warmup = warmup
        self._warmup_runs = warmup_runs
        self._lock = threading.Lock()  # one profiled request at a time per model version
        # One low-priority thread builds the sessions and runs the profiles.
        self._builder = ThreadPoolExecutor(1, thread_name_prefix="profile-session", initializer=_lowest_priority)
        self._spare: Future[ProfilingSession] | None = None

    def run(self, feeds: dict[str, np.ndarray], runs: int) -> ProfiledRun:
        """Profile ``runs`` runs of ``feeds`` on a fresh profiling session. Blocking: call from a worker."""
        with self._lock:
            waiting = time.perf_counter()
            if self._spare is None:
                self._spare = self._builder.submit(self._create)
            spare, self._spare = self._spare, None  # a failed build is retried by the next call
            try:
                session = spare.result()
                waited_s = time.perf_counter() - waiting
                outputs, profile = self._builder.submit(session.measure, feeds, runs, self._warmup_runs).result()
            finally:
                # The next session warms up at this call's shape.
                self._warmup = {name: np.zeros_like(value) for name, value in feeds.items()}
                self._spare = self._builder.submit(self._create, SPARE_DELAY_S)
            profile.setup_us += waited_s * 1e6
            return ProfiledRun(outputs, profile, profile.setup_us / 1e6, profile.wall_us / 1e6)

    def _create(self, delay_s: float = 0.0) -> ProfilingSession:
        time.sleep(delay_s)
        session = self._core.build()
        session.warm(self._warmup)  # first-run allocations happen here, ahead of the request
        # The layer table too (the first time: reading the model, a second for VGG-16).
        self._core.static.rows(int(next(iter(self._warmup.values())).shape[0]) if self._warmup else 1)
        return session

    def close(self) -> None:
        self._builder.shutdown(wait=True, cancel_futures=True)
        spare, self._spare = self._spare, None
        if spare is not None and not spare.cancelled() and spare.exception() is None:
            spare.result().close()  # built ahead, never measured: its CUDA stream and events go too
        self._core.close()
