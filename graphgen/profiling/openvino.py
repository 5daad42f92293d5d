"""Profiles on OpenVINO's CPU plugin, named after graphgen's layers like onnxruntime's.

OpenVINO (the ``openvino`` extra) counts each node's time when a model is compiled with
``PERF_COUNT``: after every inference, ``InferRequest.get_profiling_info()`` lists the nodes of its
*executable* graph with their status (``EXECUTED``, or ``NOT_RUN`` for what was fused away),
implementation (``exec_type``, e.g. ``brgconv_avx512_f32``) and durations (``real_time``; no start
times). Nodes of the executable graph are named after the ONNX nodes OpenVINO's ONNX frontend
made them from (``layer1.0.conv1/WithoutBiases``: the Convolution without its bias Add; some after
the node's output value, ``logits``), and each carries in its runtime info ``originalLayersNames``,
the names of every node fused into it (``layer1.0.conv3/WithoutBiases,layer1.0.add,
layer1.0.relu_2``). So the layer map is read, not guessed: each name is a graphgen node, a node
name plus ``/suffix``, or a value name (its producer). Nodes with no original name (``Reorder``
between layouts) are OpenVINO's own and are reported as such.

Settings are made equal to onnxruntime's, and stated: one request at a time (``NUM_STREAMS`` 1,
``LATENCY``); ``--threads N`` gives N threads and no pinning (onnxruntime pins its threads only
when it picks their number); ``--threads 0`` leaves both to OpenVINO's defaults (one thread per
core, pinned), as onnxruntime's. Precision: ``f32`` by default, for parity with onnxruntime's
float32 kernels; the CPU plugin's own default (``bf16`` where the CPU has AVX-512 BF16) is
``--openvino-precision default``. Whatever ran is read back from the compiled model.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from graphgen.profiling.disturbance import CpuWaits, process_threads
from graphgen.profiling.join import StaticTable
from graphgen.profiling.layermap import KernelOrigin, LayerMap
from graphgen.profiling.summary import Profile, explain, summarize
from graphgen.profiling.trace import KernelEvent, RunTrace

RUNTIME = "openvino"
PRECISIONS = ("f32", "bf16", "f16", "default")
DEFAULT_PRECISION = "f32"
NOT_INSTALLED = "OpenVINO is not installed: pip install 'graphgen-onnx[openvino]'"
# Executable-graph node types that run nothing (their time is 0 or they are the model's ends).
PASSIVE = frozenset({"Input", "Output", "Const", "Parameter", "Result", "Constant"})
SEPARATORS = ("/", "_", ".", ":")


def unavailable_reason() -> str | None:
    """Why OpenVINO's CPU plugin cannot run here (None: it can)."""
    try:
        import openvino
    except ImportError:
        return NOT_INSTALLED
    try:
        devices = openvino.Core().available_devices
    except RuntimeError as error:  # a plugin that fails to load
        return f"OpenVINO {openvino.get_version()} cannot start: {error}"
    return None if "CPU" in devices else f"OpenVINO {openvino.get_version()} has no CPU device here ({devices})"


@dataclass(frozen=True)
class ExecNode:
    """One node of OpenVINO's executable graph: its name, type and the original nodes fused into it."""

    name: str
    layer_type: str
    original_names: tuple[str, ...]
    precision: str = ""  # its runtimePrecision: f32, bf16, i8, …


def map_exec_nodes(original: onnx.GraphProto, nodes: Iterable[ExecNode]) -> LayerMap:
    """Each executable-graph node → the graphgen nodes it computes (none: OpenVINO inserted it)."""
    graph_nodes = list(original.node)
    op_types = {node.name: node.op_type for node in graph_nodes}
    position = {node.name: i for i, node in enumerate(graph_nodes) if node.name}
    producer = {value: node.name for node in graph_nodes for value in node.output if node.name}
    by_length = sorted(position, key=len, reverse=True)  # `layer1.10` before `layer1.1`

    def resolve(name: str) -> str | None:
        if name in position:
            return name
        if name in producer:
            return producer[name]
        for candidate in by_length:
            if name.startswith(candidate) and name[len(candidate)] in SEPARATORS:
                return candidate
        return None

    kernels: dict[str, KernelOrigin] = {}
    covered: set[str] = set()
    for node in nodes:
        if node.layer_type in PASSIVE:
            continue
        names = sorted({n for n in map(resolve, node.original_names) if n is not None}, key=position.__getitem__)
        covered.update(names)
        kernels[node.name] = KernelOrigin(tuple(names), tuple(op_types[n] for n in names))
    unprofiled = tuple(n.name for n in graph_nodes if n.name not in covered and n.op_type != "Constant")
    return LayerMap(kernels, unprofiled)


def exec_nodes(compiled: Any) -> list[ExecNode]:
    """The executable graph of a compiled model (``CompiledModel.get_runtime_model()``)."""
    out = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        layer_type = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
        out.append(ExecNode(op.get_friendly_name(), layer_type, tuple(n for n in names.split(",") if n), precision))
    return out


@dataclass(frozen=True)
class Settings:
    """What the compiled model runs with, read back from it."""

    version: str
    precision: str  # INFERENCE_PRECISION_HINT in force: "f32", "bf16", …
    requested: str  # what was asked: "f32", … or "default"
    device_default: str  # the CPU plugin's own default precision here
    threads: int
    pinning: bool
    streams: int

    def describe(self) -> str:
        asked = "asked for" if self.requested != "default" else "the plugin's default"
        return (
            f"OpenVINO {self.version.split('-')[0]} CPU: INFERENCE_PRECISION_HINT {self.precision} ({asked}; "
            f"the CPU plugin's default here: {self.device_default}), {self.threads} thread{'s' if self.threads != 1 else ''}, "
            f"pinning {'on' if self.pinning else 'off'}, {self.streams} stream"
        )


def compile_model(path: str | Path, *, threads: int = 0, precision: str = DEFAULT_PRECISION, perf_count: bool = False):
    """``path`` compiled for the CPU plugin with onnxruntime's settings (see the module's docstring)."""
    import openvino as ov

    if precision not in PRECISIONS:
        raise ValueError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    core = ov.Core()
    config: dict[str, Any] = {"PERF_COUNT": perf_count, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config |= {"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False}
    compiled = core.compile_model(str(path), "CPU", config)
    settings = Settings(
        version=ov.get_version(),
        precision=compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
        requested=precision,
        device_default=core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name(),
        threads=int(compiled.get_property("INFERENCE_NUM_THREADS")),
        pinning=bool(compiled.get_property("ENABLE_CPU_PINNING")),
        streams=int(compiled.get_property("NUM_STREAMS")),
    )
    return compiled, settings


def _flat(model_path: Path, directory: Path) -> Path:
    """OpenVINO refuses model-local functions: a ``--functions`` model is profiled with them inlined."""
    if not onnx.load(str(model_path), load_external_data=False).functions:
        return model_path
    from graphgen.onnx_io import load_model, save_model
    from graphgen.passes.inline import inline_functions

    return save_model(inline_functions(load_model(model_path)).model, directory / "inlined.onnx")


class OpenVinoProfiler:
    """One model compiled with performance counters; :meth:`measure` profiles it like onnxruntime's."""

    def __init__(self, model_path: str | Path, *, threads: int = 0, precision: str = DEFAULT_PRECISION) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="graphgen-openvino-")
        self.source = Path(model_path)
        self.model_path = _flat(self.source, Path(self._workdir.name))
        self.inlined = self.model_path != self.source
        threads_before = process_threads()
        started = time.perf_counter()
        self.compiled, self.settings = compile_model(
            self.model_path, threads=threads, precision=precision, perf_count=True
        )
        self.build_s = time.perf_counter() - started
        self.nodes = exec_nodes(self.compiled)
        self.layer_map = map_exec_nodes(onnx.load(str(self.model_path), load_external_data=False).graph, self.nodes)
        self.static = StaticTable(self.model_path)
        self._request = self.compiled.create_infer_request()  # the only one: its counters are ours
        self._threads_before = threads_before  # OpenVINO's threads: those made since (compiling, first runs)
        self._inferences = 0  # since compilation: the counters average over all of them
        self._totals: dict[tuple[int, str], int] = {}

    @property
    def provider(self) -> str:
        return f"OpenVINO CPU {self.settings.precision}"

    def measure(self, feeds: dict[str, np.ndarray], runs: int, warmup_runs: int) -> tuple[list[np.ndarray], Profile]:
        """``warmup_runs`` uncounted runs, then ``runs`` measured ones; the last outputs and the profile."""
        if runs < 1:
            raise ValueError(f"runs must be at least 1, got {runs}")
        started = time.perf_counter()
        for _ in range(warmup_runs):
            self._request.infer(feeds)
            self._inferences += 1
        warm_s = time.perf_counter() - started
        self._node_times()  # the counters' totals so far: the warm-up runs are left out by difference
        waits = CpuWaits.of_session(process_threads() - self._threads_before)
        traces: list[RunTrace] = []
        origin = time.perf_counter()
        outputs: list[np.ndarray] = []
        for _ in range(runs):
            waits.start()
            begun = time.perf_counter()
            result = self._request.infer(feeds)
            ended = time.perf_counter()
            waits.stop()
            self._inferences += 1
            traces.append(self._run_trace(self._node_times(), (begun - origin) * 1e6, (ended - begun) * 1e6))
            outputs = [np.array(value) for value in result.values()]
        wall_s = time.perf_counter() - origin
        batch = int(next(iter(feeds.values())).shape[0]) if feeds else 1
        profile = summarize(traces, self.layer_map, batch=batch, warmup_runs=warmup_runs, runtime=RUNTIME)
        profile.setup_us, profile.build_us, profile.wall_us = warm_s * 1e6, self.build_s * 1e6, wall_s * 1e6
        profile.cpu_waits = waits.shares if waits.available else []
        profile.notes.extend(self._notes(profile))
        self.static.join(profile)
        explain(profile)
        return outputs, profile

    def _node_times(self) -> list[tuple[str, str, int]]:
        """Each executed node's time in the last run: (name, type, µs).

        The CPU plugin's counters are running averages: ``real_time`` is the node's total time over
        every inference since compilation divided by their number, in whole µs (``PerfCount::avg``).
        So after the k-th inference a node's total is k·avg_k (to within k−1 µs: the division's
        remainder) and its time in that inference the difference from the total after the one before.
        """
        k, out = self._inferences, []
        for index, node in enumerate(self._request.get_profiling_info()):
            if node.status.name != "EXECUTED" or node.node_type in PASSIVE:
                continue
            total = k * round(node.real_time.total_seconds() * 1e6)
            key = (index, node.node_name)
            previous, self._totals[key] = self._totals.get(key, 0), total
            out.append((node.node_name, node.node_type, max(total - previous, 0)))
        return out

    def _run_trace(self, nodes: list[tuple[str, str, int]], start_us: float, dur_us: float) -> RunTrace:
        """One run's executed nodes laid end to end from the run's start (OpenVINO gives durations only)."""
        kernels, cursor = [], round(start_us)
        for name, node_type, time_us in nodes:
            kernels.append(KernelEvent(name, node_type, self.provider, cursor, time_us, 0, 0, 0))
            cursor += time_us
        return RunTrace(round(start_us), round(dur_us), kernels)

    def _notes(self, profile: Profile) -> list[str]:
        mapped = sum(row.time.median for row in profile.rows if row.mapped)
        total = sum(row.time.median for row in profile.rows)
        precision = {node.name: node.precision or "?" for node in self.nodes}
        precisions = Counter(precision.get(row.kernel, "?") for row in profile.rows)
        notes = [
            self.settings.describe(),
            f"{mapped / total:.1%} of OpenVINO's node time maps to graphgen layers" if total else "no node ran",
            "kernels by runtime precision: " + ", ".join(f"{p} {n}" for p, n in precisions.most_common()),
            "OpenVINO reports each node's duration, not its start: a run is the wall time of infer() from Python, "
            "and traces lay its nodes end to end",
            "OpenVINO's counters are running averages in whole µs since compilation: each run's node times are "
            f"their differences, exact to within {max(self._inferences - 1, 0)} µs per node",
        ]
        if self.inlined:
            notes.append("the model's local functions (--functions blocks) were inlined for OpenVINO")
        return notes

    def close(self) -> None:
        self._workdir.cleanup()
