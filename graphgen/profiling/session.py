"""Profiling sessions: built, warmed up, run ``runs`` times, read back as one :class:`Profile`.

onnxruntime (1.31, from Python) profiles whole sessions: ``enable_profiling`` is a session
option and ``end_profiling()`` writes the trace and switches profiling off for good. So each
profile gets a session of its own (:meth:`ModelProfiler.build`), which records the warm-up runs
(left out) and the measured runs, and is ended by :meth:`ProfilingSession.measure`. The
optimised graph is written once per model (``optimized_model_filepath``) so :mod:`.layermap` can
name the kernels after graphgen's layers.

On CUDA the session runs on a non-blocking stream of its own, CUPTI collects the GPU records of
the measured runs (GPU time per node, the input and output copies as rows of their own, each
run's GPU span and busy time) and CUDA events bracket each run as a cross-check, where those are
installed (:mod:`.cuda`); otherwise the profile's ``timing`` says its rows are launch times. A
session onnxruntime built on CPU although CUDA was asked for says so in the profile.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from graphgen.profiling import cuda as gpu
from graphgen.profiling.attribution import (
    FLOOR_WIDENING_NS,
    INPUT_COPY,
    OUTPUT_COPY,
    RunWindow,
    attribute,
    spans_from_trace,
)
from graphgen.profiling.disturbance import CpuWaits, process_threads
from graphgen.profiling.join import StaticTable
from graphgen.profiling.layermap import PRECISION_CAST, LayerMap, map_layers
from graphgen.profiling.summary import (
    TIMING_DEVICE,
    TIMING_HOST,
    TIMING_LAUNCH,
    LayerRow,
    Profile,
    Spread,
    explain,
    summarize,
)
from graphgen.profiling.trace import RunTrace, read_runs

DEFAULT_RUNS = 10
DEFAULT_WARMUP_RUNS = 2
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Providers whose nodes queue work on the GPU: their node times are launch times.
GPU_PROVIDERS = frozenset({CUDA, "TensorrtExecutionProvider", "NvTensorRTRTXExecutionProvider"})
Providers = Sequence[str | tuple[str, dict[str, Any]]]


def _name(provider: str | tuple[str, dict[str, Any]]) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


class ModelProfiler:
    """The profiling sessions of one model file: kernels named once, a session built per profile."""

    def __init__(
        self,
        model_path: str | Path,
        providers: Providers = ("CPUExecutionProvider",),
        make_options: Callable[[], ort.SessionOptions] = ort.SessionOptions,
    ) -> None:
        self.model_path = Path(model_path)
        self.providers = list(providers)
        self._make_options = make_options
        self.cuda_options: dict[str, Any] | None = None
        for provider in self.providers:
            if _name(provider) == CUDA:
                self.cuda_options = dict(provider[1]) if isinstance(provider, tuple) else {}
        if self.cuda_options and str(self.cuda_options.get("enable_cuda_graph", "0")) not in ("0", "false", "False"):
            raise ValueError(
                "enable_cuda_graph replays one captured graph per run: onnxruntime then runs no node, so there is "
                "no per-layer time to report; profile without it"
            )
        in_memory = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # traces are written and read back
        self._workdir = tempfile.TemporaryDirectory(prefix="graphgen-profile-", dir=in_memory)
        self.inlined = bool(onnx.load(str(self.model_path), load_external_data=False).functions)
        if self.inlined:
            # onnxruntime inlines local functions under names of its own (_inlfunc_…): profile the graph
            # with graphgen's blocks inlined under their layer names instead (the same computation).
            from graphgen.onnx_io import load_model, save_model
            from graphgen.passes.inline import inline_functions

            flat = inline_functions(load_model(self.model_path)).model
            self.model_path = save_model(flat, Path(self._workdir.name) / "inlined.onnx")
        self.layer_map: LayerMap | None = None
        self.static = StaticTable(self.model_path)
        self._created = 0
        self.no_events = gpu.cuda_runtime_unavailable_reason() if self.on_cuda else None  # why no CUDA events

    @property
    def on_cuda(self) -> bool:
        return self.cuda_options is not None

    def build(self) -> ProfilingSession:
        """A new profiling session (a few hundred ms of CPU for a ResNet-50)."""
        options = self._make_options()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(self._workdir.name) / f"trace{self._created}")
        self._created += 1
        first = self.layer_map is None
        optimized = Path(self._workdir.name) / "optimized.onnx"
        if first:
            options.optimized_model_filepath = str(optimized)
            # Weights in a side file: only the topology is read back.
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "64")
        providers, timer = self.providers, None
        if self.on_cuda and self.no_events is None:
            assert self.cuda_options is not None
            try:
                timer = gpu.EventTimer(int(self.cuda_options.get("device_id", 0)))
            except gpu.CudaError as error:  # no driver, no device: the session itself will say more
                self.no_events = str(error)
            else:
                cuda_options = self.cuda_options | {"user_compute_stream": timer.stream_handle}
                providers = [(CUDA, cuda_options) if _name(p) == CUDA else p for p in self.providers]
        threads_before = process_threads()
        started = time.perf_counter()
        try:
            # enable_fallback=0: onnxruntime's Python layer would otherwise retry a failing CUDA or
            # TensorRT session on CPU (or on CUDA without the options), saying so on stdout only.
            session = ort.InferenceSession(str(self.model_path), options, providers=providers, enable_fallback=0)
        except BaseException:
            if timer is not None:
                timer.close()
            raise
        build_s = time.perf_counter() - started
        pool = process_threads() - threads_before  # onnxruntime's intra-op threads for this session
        if first:
            original = onnx.load(str(self.model_path), load_external_data=False)
            self.layer_map = map_layers(original.graph, onnx.load(str(optimized), load_external_data=False).graph)
            for side_file in Path(self._workdir.name).glob("*"):
                if side_file.name.startswith(("optimized", "weights")):
                    side_file.unlink()
        return ProfilingSession(self, session, build_s, timer, pool)

    def close(self) -> None:
        self._workdir.cleanup()


class ProfilingSession:
    """One session with profiling on, used for exactly one profile."""

    def __init__(
        self,
        owner: ModelProfiler,
        session: ort.InferenceSession,
        build_s: float,
        timer: gpu.EventTimer | None,
        pool: set[int] | frozenset[int] = frozenset(),
    ) -> None:
        self.owner, self.session, self.build_s, self._timer = owner, session, build_s, timer
        self.pool = frozenset(pool)  # the session's intra-op threads (for their CPU waits)
        self.provider = session.get_providers()[0]
        self.on_gpu = self.provider in GPU_PROVIDERS
        self.fell_back = owner.on_cuda and not self.on_gpu  # asked for CUDA, built on CPU
        if not self.on_gpu:
            self._close_timer()  # events around CPU runs would time nothing the GPU did

    def warm(self, feeds: dict[str, np.ndarray], runs: int = 1) -> float:
        """Unmeasured runs (first-run allocations, caches); their seconds."""
        started = time.perf_counter()
        for _ in range(runs):
            self.session.run(None, feeds)
        return time.perf_counter() - started

    def measure(
        self, feeds: dict[str, np.ndarray], runs: int = DEFAULT_RUNS, warmup_runs: int = DEFAULT_WARMUP_RUNS
    ) -> tuple[list[np.ndarray], Profile]:
        """``warmup_runs`` uncounted runs, then ``runs`` measured ones; the last outputs and the profile.

        Ends the session's profiling and closes the session: a session measures once, and whatever
        happens its CUDA stream and events are freed. Blocking (call from a worker thread).
        """
        if runs < 1:
            raise ValueError(f"runs must be at least 1, got {runs}")
        try:
            return self._measure(feeds, runs, warmup_runs)
        finally:
            self.close()

    def close(self) -> None:
        """Free the session, then the stream it computes on (idempotent; for a session never measured too)."""
        if self._timer is not None:
            self.__dict__.pop("session", None)  # the session computes on the timer's stream: it goes first
            self._close_timer()

    def _close_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()

    def _measure(self, feeds: dict[str, np.ndarray], runs: int, warmup_runs: int) -> tuple[list[np.ndarray], Profile]:
        warm_s = self.warm(feeds, warmup_runs)
        no_cupti = gpu.cupti_unavailable_reason() if self.on_gpu else None
        collector = gpu.CuptiCollector() if self.on_gpu and no_cupti is None else None
        timer = self._timer
        run_options = ort.RunOptions()
        if timer is not None:
            # Our events bracket the run on the session's stream; onnxruntime must not sync it itself.
            run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        outputs: list[np.ndarray] = []
        event_us: list[float] = []
        windows: list[RunWindow] = []
        thread = threading.get_native_id()  # the id CUPTI's API records and onnxruntime's trace give

        def run_once() -> None:
            outputs[:] = self.session.run(None, feeds, run_options)

        if collector is not None:
            try:
                collector.start()
            except gpu.CudaError as error:
                no_cupti, collector = str(error), None
        waits = CpuWaits.of_session(self.pool)
        started = time.perf_counter()
        try:
            for run in range(runs):
                before = collector.now() if collector is not None else 0
                waits.start()
                if timer is not None:
                    event_us.append(timer.time(run_once))
                else:
                    run_once()
                waits.stop()
                if collector is not None:
                    windows.append(RunWindow(run, thread, before, collector.now()))
        finally:
            failure = collector.stop() if collector is not None else None
        wall_s = time.perf_counter() - started
        if failure is not None:
            no_cupti, collector = failure, None
        trace = Path(self.session.end_profiling())
        try:
            events = json.loads(trace.read_text())
        finally:
            trace.unlink(missing_ok=True)
        measured = read_runs(events)[-runs:]
        timing = TIMING_HOST if not self.on_gpu else TIMING_DEVICE if collector is not None else TIMING_LAUNCH
        assert self.owner.layer_map is not None
        batch = int(next(iter(feeds.values())).shape[0]) if feeds else 1
        profile = summarize(measured, self.owner.layer_map, batch=batch, warmup_runs=warmup_runs, timing=timing)
        profile.setup_us, profile.build_us, profile.wall_us = warm_s * 1e6, self.build_s * 1e6, wall_s * 1e6
        profile.cpu_waits = waits.shares if waits.available else []
        if self.fell_back:
            profile.notes.append(
                f"asked for {CUDA}, onnxruntime built this session on {self.provider} (the CUDA provider failed "
                "to start; onnxruntime's log says why): these are CPU times"
            )
        if self.on_gpu and collector is None:
            profile.notes.append(f"rows are CUDA launch times, not GPU times: {no_cupti}")
        if event_us:
            profile.event_run = Spread.of(event_us)
        elif self.on_gpu and self.owner.no_events:
            profile.notes.append(f"no CUDA-event cross-check: {self.owner.no_events}")
        if collector is not None:
            self._add_device_times(profile, measured, collector.records, windows, feeds, outputs)
        if self.owner.inlined:
            profile.notes.append("the model's local functions (--functions blocks) were inlined for profiling")
        cast = sum(row.kernel.startswith(PRECISION_CAST) for row in profile.rows)
        if cast:
            profile.notes.append(
                f"{cast} kernels ran in float32 between Casts onnxruntime inserted ({PRECISION_CAST}*): "
                f"{self.provider} has no float16 kernel for them, so these are not float16 times"
            )
        self.owner.static.join(profile)
        explain(profile)
        return outputs, profile

    def _add_device_times(
        self,
        profile: Profile,
        measured: list[RunTrace],
        records: gpu.CuptiRecords,
        windows: list[RunWindow],
        feeds: dict[str, np.ndarray],
        outputs: list[np.ndarray],
    ) -> None:
        start_ns = self.session.get_profiling_start_time_ns()
        node_events = [
            (event.kernel, run, event.thread_id, event.start_us, event.dur_us)
            for run, trace in enumerate(measured)
            for event in trace.kernels
        ]
        spans = spans_from_trace(node_events, start_ns, records.offset_ns)
        slack_ns = records.offset_bracket_ns
        result = attribute(spans, windows, records.calls, records.activities, slack_ns=slack_ns)
        runs = range(len(measured))

        def per_run(table: dict[tuple[int, str], int], key: str) -> Spread:
            return Spread.of([table.get((run, key), 0) / 1e3 for run in runs])

        for row in profile.rows:
            if row.provider != CPU or any((run, row.kernel) in result.device_ns for run in runs):
                row.device = per_run(result.device_ns, row.kernel)
        copied = {INPUT_COPY: sum(a.nbytes for a in feeds.values()), OUTPUT_COPY: sum(a.nbytes for a in outputs)}
        for key, nbytes in copied.items():
            if any((run, key) in result.device_ns for run in runs):
                row = LayerRow(
                    layer=key,
                    nodes=(),
                    op_types=(),
                    kernel=key,
                    kernel_op="Memcpy",
                    provider=self.provider,
                    time=per_run(result.launch_ns, key),  # the host's time in the copy calls
                    io_bytes=nbytes,
                    device=per_run(result.device_ns, key),
                )
                profile.rows.insert(0 if key == INPUT_COPY else len(profile.rows), row)
        profile.device_run = Spread.of([result.span_ns.get(run, 0) / 1e3 for run in runs])
        profile.device_busy = Spread.of([result.busy_ns.get(run, 0) / 1e3 for run in runs])
        unattributed = Spread.of([result.unattributed_ns.get(run, 0) / 1e3 for run in runs]).median
        profile.notes.append(
            f"CUPTI: {result.attributed} GPU activities in rows, {result.unattributed} of the runs' in none "
            f"(median {unattributed:.1f} µs per run); {result.ambiguous} launched within "
            f"{(FLOOR_WIDENING_NS + slack_ns) / 1e3:.1f} µs of a node's edge (the trace's µs floor and the clock "
            f"offset's bracket, {slack_ns / 1e3:.1f} µs)"
        )
        if result.other:
            profile.notes.append(
                f"CUPTI: {result.other} GPU activities ({result.other_ns / 1e3:,.0f} µs) were launched by other "
                "threads or outside the measured runs (another session of this process, e.g. serving) and are "
                "left out of the rows; they shared the GPU with the runs, whose spans may include them"
            )
        if records.dropped or records.incomplete:
            profile.notes.append(
                f"CUPTI dropped {records.dropped} records (buffers full) and could not time {records.incomplete} "
                "(start or end 0, left out): rows may be short of the runs' GPU time"
            )
