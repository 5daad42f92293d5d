"""Per-layer profiles of single requests, without slowing the requests that do not ask.

onnxruntime (1.31, from Python) profiles whole sessions: ``enable_profiling`` is a session option,
and ``end_profiling()`` writes the trace and switches profiling off for good. So requests that
ask for a profile run on a *profiling session* of their own, never on the serving session
(whose unprofiled runs pay nothing): one such session per model version is kept ready, used for
exactly one request, ended, and replaced in the background by a fresh, warmed-up one. The first
profiled request of a model waits for its profiling session to be created.

The trace's node events are named ``<optimised node name>_kernel_time`` with ``dur`` in µs and
``args.provider``/``args.op_name``; the ``model_run`` session event is onnxruntime's own duration
of the run, which the kernel rows must add up to (the difference is reported as overhead). The
optimised graph is written once (``optimized_model_filepath``) so :mod:`.layermap` can name the
kernels after graphgen's layers.

On CPU the rows add up to the run within about 1% (the executor's own time between kernels).
On CUDA (not measured in this work: no GPU was available) a kernel event may time the launch
rather than the kernel where onnxruntime does not synchronise; the difference then shows as a
large ``overhead_us`` rather than being hidden.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from graphgen_server.layermap import LayerMap, map_layers

log = logging.getLogger("graphgen_server")
KERNEL_SUFFIX = "_kernel_time"
SPARE_DELAY_S = 0.05


@dataclass(frozen=True)
class LayerTiming:
    layer: str  # graphgen layer names, or "[onnxruntime] <kernel>" for an inserted kernel
    nodes: tuple[str, ...]
    op_types: tuple[str, ...]
    kernel: str
    kernel_op: str
    provider: str
    time_us: int

    @property
    def mapped(self) -> bool:
        return bool(self.nodes)


@dataclass(frozen=True)
class ProfileResult:
    layers: list[LayerTiming]
    inference_us: int  # onnxruntime's model_run duration
    unprofiled: tuple[str, ...]
    provider: str

    @property
    def layers_us(self) -> int:
        return sum(row.time_us for row in self.layers)

    @property
    def overhead_us(self) -> int:
        return self.inference_us - self.layers_us


def parse_trace(events: list[dict], layer_map: LayerMap) -> ProfileResult:
    """The last run recorded in an onnxruntime trace, one row per kernel, in execution order."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        raise ValueError("the onnxruntime trace has no model_run event")
    run = max(runs, key=lambda e: e["ts"])
    start, end = run["ts"], run["ts"] + run["dur"]
    kernels = sorted(
        (
            e
            for e in events
            if e.get("cat") == "Node" and e.get("name", "").endswith(KERNEL_SUFFIX) and start <= e["ts"] <= end
        ),
        key=lambda e: e["ts"],
    )
    rows = []
    for event in kernels:
        kernel = event["name"][: -len(KERNEL_SUFFIX)]
        origin = layer_map.origin(kernel)
        args = event.get("args", {})
        rows.append(
            LayerTiming(
                layer=origin.layer if origin.mapped else f"[onnxruntime] {kernel}",
                nodes=origin.nodes,
                op_types=origin.op_types,
                kernel=kernel,
                kernel_op=args.get("op_name", ""),
                provider=args.get("provider", ""),
                time_us=int(event["dur"]),
            )
        )
    providers = sorted({row.provider for row in rows if row.provider})
    return ProfileResult(rows, int(run["dur"]), layer_map.unprofiled, ", ".join(providers))


SessionFactory = Callable[[ort.SessionOptions], ort.InferenceSession]


class Profiler:
    """The profiling sessions of one model version: one kept ready, each used for one run."""

    def __init__(self, make_session: SessionFactory, model_path: Path, warmup: dict[str, np.ndarray]) -> None:
        self._make_session = make_session
        self._model_path = model_path
        self._warmup = warmup
        # Traces are written and read back once per profiled call: in memory where there is a tmpfs.
        in_memory = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self._workdir = tempfile.TemporaryDirectory(prefix="graphgen-profile-", dir=in_memory)
        self._lock = threading.Lock()  # one profiled run at a time per model version
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="profile-session")
        self._spare: Future[ort.InferenceSession] | None = None
        self._layer_map: LayerMap | None = None
        self._created = 0

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], ProfileResult, float, float]:
        """Run once on a fresh profiling session: outputs, profile, seconds waited for the session, seconds run.

        Blocking: call it from a worker thread.
        """
        waiting = time.perf_counter()
        with self._lock:
            if self._spare is None:
                self._spare = self._builder.submit(self._create)
            spare, self._spare = self._spare, None  # a failed build is retried by the next call
            session = spare.result()
            started = time.perf_counter()
            try:
                outputs = session.run(None, feeds)
                ran = time.perf_counter()
                trace_path = Path(session.end_profiling())
                try:
                    events = json.loads(trace_path.read_text())
                finally:
                    trace_path.unlink(missing_ok=True)
                assert self._layer_map is not None  # set by the first _create
                profile = parse_trace(events, self._layer_map)
            finally:
                # The next session is built only now, and a moment later, so that building it (a
                # few hundred ms of CPU) slows neither this call nor the sending of its answer.
                # It warms up at this call's shape.
                self._warmup = {name: np.zeros_like(value) for name, value in feeds.items()}
                self._spare = self._builder.submit(self._create, SPARE_DELAY_S)
            return outputs, profile, started - waiting, ran - started

    def _create(self, delay_s: float = 0.0) -> ort.InferenceSession:
        time.sleep(delay_s)
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(self._workdir.name) / f"trace{self._created}")
        first = self._layer_map is None
        if first:
            optimized = Path(self._workdir.name) / "optimized.onnx"
            options.optimized_model_filepath = str(optimized)
            # Weights in a side file: only the topology is read back.
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "64")
        session = self._make_session(options)
        self._created += 1
        if first:
            original = onnx.load(str(self._model_path), load_external_data=False)
            self._layer_map = map_layers(original.graph, onnx.load(str(optimized), load_external_data=False).graph)
            for side_file in Path(self._workdir.name).glob("*"):
                if side_file.name.startswith(("optimized", "weights")):
                    side_file.unlink()
            if self._layer_map.unprofiled:
                log.info("%s: layers without a kernel of their own: %s", self._model_path, self._layer_map.unprofiled)
        session.run(None, self._warmup)  # first-run allocations are not the request's time
        return session

    def close(self) -> None:
        self._builder.shutdown(wait=True, cancel_futures=True)
        self._workdir.cleanup()
