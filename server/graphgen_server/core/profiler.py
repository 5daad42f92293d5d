"""Per-layer profiles of single requests.

The profiler itself is graphgen's (:mod:`graphgen.profiling`: a profiling session per profile,
warm-up runs not counted, ``runs`` measured runs, per row the median and p10–p90 spread, joined
with the static layer table). What the server adds is keeping one profiling session per model
version built ahead: it is used by exactly one request, then a fresh one is built in the
background (a moment after the request, so that building it slows neither the request nor the
sending of its answer). A request that finds no session ready waits for it to be built: that
wait and the warm-up runs are reported as the profile's *setup* time, never as queue time.

Priority: by default (``profile_nice`` 0) a profile's thread, and the onnxruntime threads its
session makes (which inherit it), compete for the CPU like the serving threads: a profile takes
its fair share, so on a busy server it finishes and measures kernels that ran, rather than kernels
starved at the lowest priority (nice 19: a ResNet-50 profile under 8 looping clients on 2 cores took
tens of seconds and its rows added up to a few % of its runs). ``--profile-nice 19`` puts serving
first again. Either way each run's disturbance is measured (its threads' CPU waits,
:mod:`graphgen.profiling.disturbance`) and said.

Waiting for the profiler — for another profile of the same version to end, for the profiler's
thread, and reading the trace after the runs — is the request's *profile wait*, its own figure;
queue is only the wait for a worker thread before the profiler is reached.
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


def _niced(nice: int) -> Callable[[], None]:
    """A thread initializer that lowers the thread's CPU priority by ``nice`` (Linux: per thread, inherited)."""

    def lower() -> None:
        if nice:
            with contextlib.suppress(AttributeError, OSError):  # no setpriority (not Unix) or not allowed
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)

    return lower


@dataclass(frozen=True)
class ProfiledRun:
    outputs: list[np.ndarray]
    profile: Profile
    setup_s: float  # waiting for the profiling session to be built, and its warm-up runs
    run_s: float  # the measured runs, wall time
    wait_s: float = 0.0  # waiting for the profiler: another profile, its thread, reading the trace
    entered: float = 0.0  # time.perf_counter() when the call reached the profiler (after any queue)


class Profiler:
    """The profiling sessions of one model version: one kept ready, each used for one request."""

    def __init__(
        self,
        model_path: Path,
        providers: Providers,
        make_options: Callable[[], ort.SessionOptions],
        warmup: dict[str, np.ndarray],
        warmup_runs: int = DEFAULT_WARMUP_RUNS,
        nice: int = 0,
    ) -> None:
        self._core = ModelProfiler(model_path, providers, make_options)
        self._warmup = warmup
        self._warmup_runs = warmup_runs
        self._lock = threading.Lock()  # one profiled request at a time per model version
        # One thread builds the sessions and runs the profiles (at the profile's priority: the
        # session's onnxruntime threads, made while building, inherit it).
        self._builder = ThreadPoolExecutor(1, thread_name_prefix="profile-session", initializer=_niced(nice))
        self._spare: Future[ProfilingSession] | None = None

    def run(self, feeds: dict[str, np.ndarray], runs: int) -> ProfiledRun:
        """Profile ``runs`` runs of ``feeds`` on a fresh profiling session. Blocking: call from a worker."""
        entered = time.perf_counter()
        with self._lock:
            locked = time.perf_counter()
            if self._spare is None:
                self._spare = self._builder.submit(self._create)
            spare, self._spare = self._spare, None  # a failed build is retried by the next call
            try:
                session = spare.result()
                submitted = time.perf_counter()
                outputs, profile, started = self._builder.submit(
                    _measure, session, feeds, runs, self._warmup_runs
                ).result()
                ended = time.perf_counter()
            finally:
                # The next session warms up at this call's shape.
                self._warmup = {name: np.zeros_like(value) for name, value in feeds.items()}
                self._spare = self._builder.submit(self._create, SPARE_DELAY_S)
        # After the runs: ending the profiling session, reading its trace, joining the layer table.
        reading_s = max(0.0, ended - started - profile.setup_us / 1e6 - profile.wall_us / 1e6)
        profile.setup_us += (submitted - locked) * 1e6  # waiting for the session to be built
        wait_s = (locked - entered) + (started - submitted) + reading_s
        return ProfiledRun(outputs, profile, profile.setup_us / 1e6, profile.wall_us / 1e6, wait_s, entered)

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


def _measure(
    session: ProfilingSession, feeds: dict[str, np.ndarray], runs: int, warmup_runs: int
) -> tuple[list[np.ndarray], Profile, float]:
    """``session.measure`` and when it started (on the profiler's thread)."""
    started = time.perf_counter()
    outputs, profile = session.measure(feeds, runs, warmup_runs)
    return outputs, profile, started
