"""int8 by onnxruntime's own quantizer: ``quantize_static``, QDQ format, signed int8, per-channel weights.

graphgen writes no quantizer: onnxruntime's calibrates each activation's range on the images
(:data:`METHODS`: min/max, entropy or a percentile of the histogram), quantizes weights
symmetrically per output channel (``per_channel=False``: one scale per tensor) and writes
QuantizeLinear/DequantizeLinear pairs around every op it quantizes, keeping graphgen's node names.
onnxruntime's CPU provider then fuses ``DQ → Conv → Q`` into integer kernels.

Keeping a layer float takes more than ``nodes_to_exclude``: onnxruntime's session optimiser
(``WeightBiasQuantization``) quantizes the float weights of any Conv/Gemm whose input comes from
a DequantizeLinear — per tensor, at load time — so an excluded layer fed by a quantized one runs
in int8 after all, with coarser weights than the quantizer would have given it. A kept layer
therefore reads its inputs before their Q/DQ pair (the float values; activations are kept as
nodes, ``QDQKeepRemovableActivations``, so those values are already activated), and the pair is
dropped where nothing else reads it. ``tests/int8`` checks the layer is float in the optimised
graph onnxruntime actually runs.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir
import onnx_ir.passes.common

from graphgen.errors import UserError
from graphgen.int8.images import ImageSet
from graphgen.stats import Layer, layers

METHODS = ("minmax", "entropy", "percentile")
ACTIVATIONS = ("int8", "uint8")
# What onnxruntime's CPU provider runs a quantized weighted op as, and what it runs a float one as.
INTEGER_KERNELS = frozenset({"QLinearConv", "QGemm", "QLinearMatMul", "ConvInteger", "MatMulInteger"})
FLOAT_KERNELS = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "ConvTranspose"})
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# Layers whose output is a view of their input: nothing to quantize or keep, nothing to report.
VIEW_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity"})


@dataclass(frozen=True)
class Int8Options:
    """How to quantize: calibration method, weight granularity, and the layers that stay float."""

    method: str = "minmax"
    per_channel: bool = True
    keep_float: tuple[str, ...] = ()  # graphgen layer names
    activations: str = "int8"  # int8 (signed) or uint8; weights are always signed int8

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"calibration method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.activations not in ACTIVATIONS:
            raise UserError(f"activations {self.activations!r}: choose one of {', '.join(ACTIVATIONS)}")


@dataclass(frozen=True)
class Int8Model:
    """The quantized model and what was done to it."""

    model: ir.Model
    options: Int8Options
    calibration_images: int
    int8_layers: tuple[str, ...]  # weighted layers whose weights are int8
    kept: tuple[str, ...]  # layers kept float
    kernels: RuntimeKernels | None = None

    def describe(self) -> str:
        weights = "per-channel" if self.options.per_channel else "per-tensor"
        activations = "signed int8" if self.options.activations == "int8" else "uint8"
        kept = f"; kept float: {', '.join(self.kept)}" if self.kept else ""
        return (
            f"{len(self.int8_layers)} weighted layer(s) in int8 (QDQ, {activations} activations, signed int8 "
            f"{weights} weights, {self.options.method} calibration on {self.calibration_images} image(s)){kept}"
        )


@dataclass(frozen=True)
class RuntimeKernels:
    """How onnxruntime's CPU provider runs the weighted ops: integer kernels, or float ones (by node name)."""

    integer: int
    float_nodes: tuple[str, ...]  # weighted nodes that run in float (kept ones, and those it would not fuse)

    def describe(self, kept: Sequence[str] = ()) -> str:
        unfused = [name for name in self.float_nodes if name not in kept]
        text = f"onnxruntime (CPU) runs {self.integer} weighted op(s) as integer kernels"
        if unfused:
            text += (
                f"; {len(unfused)} quantized one(s) run in float with their weights dequantized at every run "
                f"(e.g. {', '.join(unfused[:3])})"
            )
        return text


def computing_layers(model: ir.Model) -> list[Layer]:
    """graphgen's layers of ``model`` that compute something (views left out)."""
    return [layer for layer in layers(model.graph) if layer.nodes[0].op_type not in VIEW_OPS]


def resolve_layers(model: ir.Model, names: Sequence[str]) -> list[Layer]:
    """The layers named ``names`` (graphgen names: ``layer3.1.conv2``); :class:`UserError` for an unknown one."""
    by_name = {layer.name: layer for layer in computing_layers(model)}
    found = []
    for name in names:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; graphgen stats MODEL lists them"
            raise UserError(f"--keep-float {name}: the model has no layer of that name{hint}")
        found.append(by_name[name])
    return found


def input_name(model: ir.Model) -> str:
    """The model's one image input; :class:`UserError` when it has another number of inputs."""
    inputs = [value.name for value in model.graph.inputs if not value.is_initializer() and value.name]
    if len(inputs) != 1:
        raise UserError(f"int8 calibration feeds one image input; the model has {len(inputs)}: {inputs}")
    return inputs[0]


def quantize(model: ir.Model, images: ImageSet, options: Int8Options) -> Int8Model:
    """``model`` in int8 (QDQ), calibrated on ``images``; ``model`` itself is left untouched."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from graphgen.onnx_io import load_model, save_model

    if model.functions:
        raise UserError("int8: the model has local functions onnxruntime's quantizer does not enter; add --inline")
    if not len(images):
        raise UserError("int8: no calibration images")
    kept = resolve_layers(model, options.keep_float)
    name = input_name(model)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds: Iterator[dict] = images.feeds(name)

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[options.method]
    kept_nodes = [node for layer in kept for node in layer.node_names]
    with tempfile.TemporaryDirectory(prefix="graphgen-int8-") as folder, _quiet():
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        save_model(model, source)
        cache = None
        if options.method == "entropy":
            cache = _entropy_ranges(source, Path(folder), Reader())
        quantize_static(
            str(source),
            str(target),
            None if cache is not None else Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=options.per_channel,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QInt8 if options.activations == "int8" else QuantType.QUInt8,
            calibrate_method=method,
            nodes_to_exclude=kept_nodes,
            extra_options={"QDQKeepRemovableActivations": True},
            calibration_cache_path=cache,
        )
        quantized = ir.external_data.load_to_model(load_model(target))
        _read_float_inputs(quantized, set(kept_nodes))
        save_model(quantized, target)
        kernels = runtime_kernels(target)
    quantized.metadata_props.pop("onnx.infer", None)  # onnxruntime's note that it ran shape inference
    return Int8Model(
        quantized,
        options,
        len(images),
        tuple(layer.name for layer in computing_layers(model) if _has_int8_weights(quantized, layer)),
        tuple(layer.name for layer in kept),
        kernels,
    )


# KL-divergence thresholds over a histogram of 512 bins for 128 int8 levels a side (TensorRT's recipe,
# Migacz GTC 2017, uses 2048 bins; onnxruntime's search is quadratic in them, 512 keeps it to seconds).
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 512, 128


def _entropy_ranges(source: Path, folder: Path, reader: object) -> Path:
    """Entropy (KL) ranges by onnxruntime's own calibrator, with :data:`ENTROPY_BINS` histogram bins.

    ``quantize_static`` passes its calibrator no bin counts, and the default 128 bins searched for a
    128-bin window leave one candidate, the whole histogram: min/max under another name (onnxruntime
    1.31). So the ranges are computed here with onnxruntime's calibrator and handed to
    ``quantize_static`` as its calibration cache.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    calibrator = create_calibrator(
        source,
        list(set(QLinearOpsRegistry) | set(QDQRegistry)),  # the op types quantize_static calibrates
        augmented_model_path=str(folder / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS},
    )
    calibrator.collect_data(reader)
    cache = folder / "entropy-ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def runtime_kernels(path: Path) -> RuntimeKernels:
    """Build an onnxruntime CPU session of the model at ``path`` and read what its optimiser made of it.

    On x86, onnxruntime fuses ``DQ → Conv → Q`` into an integer kernel only with uint8 activations:
    it converts a signed pair to uint8 itself, but only where the QuantizeLinear has one consumer
    (``QDQS8ToU8Transformer``), so a signed activation that also feeds a residual sum leaves the
    convolution reading it in float.
    """
    import onnx
    import onnxruntime as ort

    from graphgen.profiling.layermap import map_layers

    optimized = path.with_name(path.stem + ".optimized.onnx")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    original = onnx.load(str(path), load_external_data=False).graph
    graph = onnx.load(str(optimized), load_external_data=False).graph
    origins = map_layers(original, graph)  # the kernels under graphgen's node names
    weighted = {node.name for node in original.node if node.op_type in WEIGHTED_OPS}
    integer = sum(node.op_type in INTEGER_KERNELS for node in graph.node)
    float_nodes = [
        name
        for kernel in graph.node
        if kernel.op_type in FLOAT_KERNELS
        for name in origins.origin(kernel.name).nodes
        if name in weighted
    ]
    return RuntimeKernels(integer, tuple(dict.fromkeys(float_nodes)))


def _read_float_inputs(model: ir.Model, kept_nodes: set[str]) -> None:
    """Kept nodes read the float value before each Q/DQ pair on their inputs (see the module's docstring)."""
    for node in model.graph:
        if node.name not in kept_nodes:
            continue
        for index, value in enumerate(node.inputs):
            dequantize = value.producer() if value is not None else None
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                continue
            quantized = dequantize.inputs[0]
            quantize = quantized.producer() if quantized is not None else None
            if quantize is None or quantize.op_type != "QuantizeLinear" or quantize.inputs[0] is None:
                continue
            node.replace_input_with(index, quantize.inputs[0])
    onnx_ir.passes.common.RemoveUnusedNodesPass()(model)


def _has_int8_weights(quantized: ir.Model, layer: Layer) -> bool:
    """Whether ``layer``'s weighted node reads a weight dequantized from int8 in ``quantized``."""
    by_name = {node.name: node for node in quantized.graph}
    for name in layer.node_names:
        node = by_name.get(name)
        if node is None or node.op_type not in WEIGHTED_OPS or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        producer = node.inputs[1].producer()
        if producer is not None and producer.op_type == "DequantizeLinear" and producer.inputs[0] is not None:
            weight = producer.inputs[0]
            if weight.is_initializer() and weight.dtype in (ir.DataType.INT8, ir.DataType.UINT8):
                return True
    return False


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantizer warns on the root logger and its histogram calibrators print; hush both."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
