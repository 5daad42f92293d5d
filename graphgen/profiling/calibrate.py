"""This machine's roof: peak compute and memory bandwidth, measured through onnxruntime.

Both are measured with the same execution provider and session settings as the profile, by
two one-node ONNX graphs (so the roof is what onnxruntime's own kernels reach here):

* **peak compute**: ``MatMul`` of two float32 N×N matrices (N = 256, 512 and 768 on CPU; 4096 on
  CUDA): N³ multiply-accumulates per run; the best GMAC/s of several runs of each. Small enough
  to fit in a scheduler time slice, so that a machine shared with other work still shows its peak;
* **memory bandwidth**: ``Add`` of two float32 vectors of 64 MiB each (CPU; 256 MiB on CUDA),
  far beyond any cache: it reads two and writes one, 3 × 64 MiB per run; GB/s of the fastest run.

The best run, not the median, because the roof is what the machine *can* do; layers are then
placed under it by their median. float32 on both: an fp16 model is drawn under the float32 roof.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from graphgen.profiling.session import CUDA, Providers, _name


@dataclass(frozen=True)
class Roof:
    peak_gmacs: float  # GMAC/s (one MAC = 2 FLOPs)
    bandwidth_gbs: float  # GB/s (1e9 bytes)
    method: str

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (MACs per byte) where the roof turns from memory- to compute-bound."""
        return self.peak_gmacs / self.bandwidth_gbs

    def as_dict(self) -> dict:
        return asdict(self) | {"ridge_macs_per_byte": self.ridge}


def _graph(op: str, shape_a: list[int], shape_b: list[int]) -> bytes:
    inputs = [
        helper.make_tensor_value_info("a", TensorProto.FLOAT, shape_a),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, shape_b),
    ]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], f"calibrate_{op}", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    return model.SerializeToString()


def _best_seconds(session: ort.InferenceSession, feeds: dict[str, np.ndarray], runs: int, on_cuda: bool) -> float:
    """The fastest run; on CUDA with inputs and output already on the device (no copies timed)."""
    if on_cuda:
        binding = session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
        binding.bind_output("y", "cuda")

        def run() -> None:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()
    else:

        def run() -> None:
            session.run(None, feeds)

    run()  # first-run allocations
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def calibrate(
    providers: Providers = ("CPUExecutionProvider",),
    make_options: Callable[[], ort.SessionOptions] = ort.SessionOptions,
    runs: int = 10,
) -> Roof:
    """Peak GMAC/s and GB/s of onnxruntime on this machine (a second or two)."""
    on_cuda = any(_name(p) == CUDA for p in providers)
    sizes = (4096,) if on_cuda else (256, 512, 768)
    elements = (64 if on_cuda else 16) * 1024 * 1024
    rng = np.random.default_rng(0)

    def session(model: bytes) -> ort.InferenceSession:
        options = make_options()
        options.log_severity_level = 3
        return ort.InferenceSession(model, options, providers=list(providers))

    peak = 0.0
    for n in sizes:
        matrices = {
            "a": rng.standard_normal((n, n), dtype=np.float32),
            "b": rng.standard_normal((n, n), dtype=np.float32),
        }
        # Three times the runs: each is short, and the best of many is what a shared CPU still shows.
        matmul_s = _best_seconds(session(_graph("MatMul", [n, n], [n, n])), matrices, 3 * runs, on_cuda)
        peak = max(peak, n**3 / matmul_s / 1e9)
    vectors = {"a": np.ones(elements, np.float32), "b": np.ones(elements, np.float32)}
    add_s = _best_seconds(session(_graph("Add", [elements], [elements])), vectors, runs, on_cuda)
    where = "CUDA" if on_cuda else "CPU"
    mib = elements * 4 >> 20
    method = (
        f"onnxruntime on {where}: MatMul NxN float32, N in {sizes} (peak compute, best of {3 * runs} runs each), "
        f"Add of two {mib} MiB float32 vectors (bandwidth, 3 x {mib} MiB moved, best of {runs} runs)"
    )
    if on_cuda:
        method += " with inputs and output on the device (IO binding)"
    return Roof(peak, 3 * elements * 4 / add_s / 1e9, method)
