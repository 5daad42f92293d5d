"""Profiles in this process (no server): ``graphgen profile`` and ``graphgen bench``'s library.

The execution providers a ``--device`` means, the session options they run with (threads, no
spinning, as graphgen-server), one model file profiled on random input on onnxruntime or OpenVINO,
and the profile's table. The measuring itself is the core the server uses too (:mod:`.session`);
OpenVINO's is :mod:`.openvino`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from graphgen.errors import UserError
from graphgen.profiling.session import CUDA, ModelProfiler, Providers
from graphgen.profiling.summary import Profile

CPU = "CPUExecutionProvider"
ONNXRUNTIME, OPENVINO = "onnxruntime", "openvino"
RUNTIMES = (ONNXRUNTIME, OPENVINO)


def providers(device: str, conv_algo_search: str = "EXHAUSTIVE") -> Providers:
    """onnxruntime's execution providers for ``--device``: CPU, or CUDA (refused where this onnxruntime has none).

    ``conv_algo_search``: how cuDNN picks convolution algorithms. EXHAUSTIVE (onnxruntime's and
    graphgen-server's default) times candidates, so two sessions may pick different ones;
    HEURISTIC picks the same ones every time, for profiles compared with each other.
    """
    if device == "cpu":
        return [CPU]
    if CUDA not in ort.get_available_providers():
        raise UserError(f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDA execution provider")
    return [(CUDA, {"cudnn_conv_algo_search": conv_algo_search}), CPU]


def session_options(threads: int) -> Callable[[], ort.SessionOptions]:
    """A maker of session options with ``threads`` intra-op threads (0: onnxruntime's default)."""

    def make() -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # As graphgen-server: idle threads sleep, so another process's work is not slowed by ours.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        return options

    return make


def random_feeds(path: Path, batch: int) -> dict[str, np.ndarray]:
    """Random input of ``batch`` images for the model at ``path`` (its first input; float32 or float16)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    first = next((value for value in graph.input if value.name not in initializers), None)
    if first is None:
        raise UserError(f"{path}: the model has no input")
    element = first.type.tensor_type.elem_type
    if element not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        name = onnx.TensorProto.DataType.Name(element).lower()
        raise UserError(f"{path}: the first input is tensor({name}); graphgen profiles float image models")
    dims = first.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch for d in dims]
    shape[0] = batch
    dtype = np.float16 if element == onnx.TensorProto.FLOAT16 else np.float32
    return {first.name: np.random.default_rng(0).standard_normal(shape).astype(dtype)}


def profile_model(
    path: Path,
    batch: int,
    runs: int,
    warmup_runs: int,
    device: str,
    threads: int,
    conv_algo_search: str = "EXHAUSTIVE",
    *,
    runtime: str = ONNXRUNTIME,
    openvino_precision: str = "f32",
) -> Profile:
    """Profile the model file at ``path`` on random input of ``batch`` images, on ``runtime``."""
    feeds = random_feeds(path, batch)
    if runtime == OPENVINO:
        return _profile_on_openvino(path, feeds, runs, warmup_runs, device, threads, openvino_precision)
    profiler = ModelProfiler(path, providers(device, conv_algo_search), session_options(threads))
    try:
        session = profiler.build()
        if device == "cuda" and session.provider != CUDA:
            raise UserError(f"--device cuda: onnxruntime could not start CUDA and ran on {session.provider}")
        _, profile = session.measure(feeds, runs, warmup_runs)
        return profile
    finally:
        profiler.close()


def _profile_on_openvino(
    path: Path, feeds: dict[str, np.ndarray], runs: int, warmup_runs: int, device: str, threads: int, precision: str
) -> Profile:
    from graphgen.profiling import openvino

    if device != "cpu":
        raise UserError("--runtime openvino runs on OpenVINO's CPU plugin: use --device cpu")
    reason = openvino.unavailable_reason()
    if reason is not None:
        raise UserError(f"--runtime openvino: {reason}")
    profiler = openvino.OpenVinoProfiler(path, threads=threads, precision=precision)
    try:
        return profiler.measure(feeds, runs, warmup_runs)[1]
    finally:
        profiler.close()


def format_profile(profile: Profile, title: str) -> str:
    """The profile joined with the static table, one row per kernel in execution order."""
    device = profile.timing == "device"
    total_macs = sum(r.macs for r in profile.rows) or 1
    width = min(max([len(r.layer) for r in profile.rows] + [5]), 48)
    lines = [
        f"{title}: {profile.runs} runs of a batch of {profile.batch} after {profile.warmup_runs} warm-up runs on "
        f"{profile.provider}; times: {profile.timing_text}",
        f"{'layer':<{width}}  {'kind':<14}  {profile.headline + ' µs':>10}  {profile.spread + ' µs':>17}  {'time':>6}  {'MACs':>6}"
        f"  {'params':>10}  {'MMACs':>8}  {'act KiB':>8}  {'GMAC/s':>7}  {'GB/s':>6}"
        + (f"  {'launch µs':>9}" if device else ""),
    ]
    for row in profile.rows:
        t = row.best
        layer = row.layer if len(row.layer) <= width else row.layer[: width - 1] + "…"
        kind = row.kind or ("+".join(row.op_types) if row.mapped else row.kernel_op)
        figure = profile.figure(row)
        rate = f"{row.macs / figure / 1e3:7.2f}" if row.macs and figure else f"{'':>7}"
        bandwidth = f"{row.bytes / figure / 1e3:6.2f}" if row.bytes and figure else f"{'':>6}"
        line = (
            f"{layer:<{width}}  {kind[:14]:<14}  {profile.figure(row):>10.1f}  {f'{t.p10:.1f}–{t.p90:.1f}':>17}"
            f"  {profile.share(row) * 100:5.1f}%  {row.macs / total_macs * 100:5.1f}%  {row.params:>10,}"
            f"  {row.macs / 1e6:>8.1f}  {row.activation_bytes / 1024:>8.0f}  {rate}  {bandwidth}"
        )
        lines.append(line + (f"  {row.time.median:>9.1f}" if device else ""))
    total = "GPU run span (CUPTI)" if device else profile.run_name
    lines.append(
        f"layers {profile.layers_us:,.0f} µs + overhead {profile.overhead_us:,.0f} µs = {total} "
        f"{profile.total_us:,.0f} µs (whole runs {profile.run.p10:,.0f}–{profile.run.p90:,.0f} µs, {profile.spread}); "
        f"rows add up within {profile.add_up_error:.1%}"
    )
    lines.append(
        f"profiling session: built in {profile.build_us / 1e3:.1f} ms, warm-up {profile.setup_us / 1e3:.1f} ms "
        "(neither counted in the rows)"
    )
    lines.extend(f"note: {note}" for note in profile.notes)
    return "\n".join(lines)
