"""Build an architecture into an ONNX model: trace, fill weights, describe, fold.

The graph is always traced in training-faithful form (every ``state_dict`` tensor an
initializer under its own key, BatchNormalization nodes included), then weights are filled
from a checkpoint or a seeded torch-like initialisation, and finally — unless ``keep_bn`` —
the :func:`~graphgen.passes.inference_form` pass produces the inference form (BatchNorm and constant
scales folded into convolutions, nested Concats flattened).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from graphgen import __version__, registry
from graphgen import metadata as meta
from graphgen.architecture import Architecture, Network
from graphgen.checkpoint import CheckpointError, StateDict, load_checkpoint
from graphgen.errors import UserError
from graphgen.nn import Init, Parameter
from graphgen.onnx_io import save_model
from graphgen.onnxscript_api import op_builder
from graphgen.passes import inference_form
from graphgen.passes.opset import convert_opset
from graphgen.passes.outline import outline_blocks
from graphgen.scopes import describe_nodes

OPSET = 21
# onnx 1.23 writes IR 14 by default, which onnxruntime 1.31 refuses; IR 10 goes with opset 21.
IR_VERSION = 10
INPUT_NAME = "input"
IGNORED_KEYS = ("num_batches_tracked",)  # torch BatchNorm bookkeeping, unused at inference


class WeightsMismatchError(CheckpointError):
    """The checkpoint's keys or shapes do not fit the architecture."""


@dataclass(frozen=True)
class BuildOptions:
    num_classes: int | None = None  # None: the architecture's own (ImageNet's 1000)
    resolution: int | None = None  # None: the architecture's default
    batch: int | None = None  # None: dynamic batch dimension
    keep_bn: bool = False
    seed: int = 0
    weights: str | Path | None = None
    variant: dict[str, object] = field(default_factory=dict)  # architecture options, e.g. {"deploy": True}
    functions: bool = False  # each block an ONNX local function (graphgen.passes.outline), after folding
    opset: int | None = None  # None: OPSET; else written at this opset (graphgen.passes.opset)


def build(name: str, options: BuildOptions | None = None, *, state: StateDict | None = None) -> ir.Model:
    """Build architecture ``name``; ``state`` (a loaded state_dict) overrides ``options.weights``."""
    options = options or BuildOptions()
    arch = registry.get(name)
    num_classes = options.num_classes or arch.num_classes
    if num_classes < 1:
        raise UserError(f"--num-classes must be at least 1, got {num_classes}")
    network = arch.network(num_classes, options.variant)
    resolution = options.resolution or network.resolution or arch.resolution
    if resolution < 32:
        raise UserError(f"--resolution must be at least 32, got {resolution}")
    if options.batch is not None and options.batch < 1:
        raise UserError(f"--batch must be at least 1 or 'dynamic', got {options.batch}")

    graph = trace(network, name, resolution, options.batch)
    if state is None and options.weights is not None:
        state = load_checkpoint(options.weights)
    if state is not None and network.adapt_state_dict is not None:
        # A form whose keys differ from its checkpoint's (ResNeXt branches, no aux heads) maps them.
        state = network.adapt_state_dict(state)
    new_head = options.num_classes is not None and num_classes != arch.num_classes
    fill_weights(graph, state, seed=options.seed, reinitialise=arch.heads if new_head else ())

    model = ir.Model(graph, ir_version=IR_VERSION, producer_name="graphgen", producer_version=__version__)
    model.doc_string = f"{arch.description or arch.name} — {arch.paper}. Reference: {arch.reference}."
    model.metadata_props.update(describe(arch, resolution, num_classes, weights=options.weights))
    # A variant may describe itself further, e.g. compound scaling records its φ and multipliers.
    model.metadata_props.update(network.metadata)
    model = model if options.keep_bn else inference_form(model).model
    describe_nodes(model.graph)  # Netron's node descriptions: the emitting module and its block
    if options.opset is not None and options.opset != OPSET:
        model = convert_opset(model, options.opset).model
    return outline_blocks(model).model if options.functions else model


def trace(network: Network, name: str, resolution: int, batch: int | None) -> ir.Graph:
    """Run the network's forward on a symbolic input, recording one ONNX node per op."""
    x = ir.Value(
        name=INPUT_NAME,
        shape=ir.Shape([batch if batch is not None else "batch", 3, resolution, resolution]),
        type=ir.TensorType(ir.DataType.FLOAT),
    )
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": OPSET}, name=name)
    result = network.module(op_builder(graph), x)
    outputs = list(result) if isinstance(result, tuple | list) else [result]
    names = network.output_names
    if len(names) != len(outputs):
        raise ValueError(f"{name}: the module returned {len(outputs)} outputs for the names {names}")
    for value, output_name in zip(outputs, names):
        value.name = output_name
        graph.outputs.append(value)
    _make_node_names_unique(graph)
    return graph


def _make_node_names_unique(graph: ir.Graph) -> None:
    """A module called twice (torchvision reuses ``relu``) emits two nodes of one name: number them."""
    seen: Counter[str | None] = Counter()
    for node in graph:
        seen[node.name] += 1
        if seen[node.name] > 1:
            node.name = f"{node.name}_{seen[node.name] - 1}"


def parameters(graph: ir.Graph) -> dict[str, Parameter]:
    """The graph's state_dict entries by key, in definition order."""
    return {key: value for key, value in graph.initializers.items() if isinstance(value, Parameter)}


def param_dims(param: Parameter) -> tuple[int, ...]:
    """A parameter's shape: static by construction (modules declare their parameters' sizes)."""
    dims = tuple(dim for dim in param.shape or () if isinstance(dim, int))
    if param.shape is None or len(dims) != len(param.shape):
        raise ValueError(f"parameter {param.name} has no static shape: {param.shape}")
    return dims


def fill_weights(graph: ir.Graph, state: StateDict | None, *, seed: int, reinitialise: tuple[str, ...] = ()) -> None:
    """Give every parameter a value: from ``state`` where given, else a seeded torch-like init.

    ``reinitialise`` names the heads whose checkpoint entries may differ in shape (a new number
    of classes): those are initialised afresh instead of loaded.
    """
    params = parameters(graph)
    if state is not None:
        _check_fits(params, state, reinitialise)
    rng = np.random.default_rng(seed)
    for key, param in params.items():
        if state is not None and key in state and tuple(state[key].shape) == param_dims(param):
            array = np.ascontiguousarray(state[key], dtype=np.float32)
        else:
            array = _initial_value(param, rng)
        param.const_value = ir.Tensor(array, name=key)


def _initial_value(param: Parameter, rng: np.random.Generator) -> np.ndarray:
    shape = param_dims(param)
    if param.init is Init.ONES:
        return np.ones(shape, np.float32)
    if param.init is Init.ZEROS:
        return np.zeros(shape, np.float32)
    bound = np.float32(1.0 / np.sqrt(param.fan_in))
    values = rng.random(shape, dtype=np.float32)  # U(0, 1), then scaled in place to U(-bound, bound)
    values *= 2 * bound
    values -= bound
    return values


def _check_fits(params: dict[str, Parameter], state: StateDict, reinitialise: tuple[str, ...]) -> None:
    def in_head(key: str) -> bool:
        return any(key.startswith(head + ".") for head in reinitialise)

    keys = [k for k in state if not k.endswith(IGNORED_KEYS)]  # checkpoint order, for readable errors
    missing = [k for k in params if k not in state and not in_head(k)]
    unexpected = [k for k in keys if k not in params]
    mismatched = [
        f"{k}: checkpoint {list(state[k].shape)}, model {list(param_dims(params[k]))}"
        for k in params
        if k in state and tuple(state[k].shape) != param_dims(params[k]) and not in_head(k)
    ]
    problems = [
        (label, items)
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    if problems:
        lines = [
            f"{label} ({len(items)}): {', '.join(items[:5])}{' …' if len(items) > 5 else ''}"
            for label, items in problems
        ]
        raise WeightsMismatchError("checkpoint does not fit the architecture:\n  " + "\n  ".join(lines))


def describe(arch: Architecture, resolution: int, num_classes: int, *, weights: str | Path | None) -> dict[str, str]:
    """The model's self-description, so a server can preprocess and label without being told."""
    return {
        meta.ARCHITECTURE: arch.name,
        meta.FAMILY: arch.family,
        meta.PAPER: arch.paper,
        meta.REFERENCE: arch.reference,
        meta.INPUT: f"{INPUT_NAME}: float32 NCHW, RGB, {resolution}x{resolution}",
        meta.RESOLUTION: str(resolution),
        **arch.preprocess.at(resolution).to_metadata(),
        meta.NUM_CLASSES: str(num_classes),
        meta.LABELS: meta.IMAGENET_LABELS if num_classes == meta.IMAGENET_CLASSES else meta.NO_LABELS,
        meta.WEIGHTS: Path(weights).name if weights else meta.RANDOM_WEIGHTS,
        meta.VERSION: __version__,
    }


def save(model: ir.Model, path: str | Path) -> Path:
    """Write the model as one .onnx file (weights streamed from their arrays: see onnx_io)."""
    return save_model(model, path)
