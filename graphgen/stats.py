"""Per-layer statistics of an ONNX graph, as the lecture tables give them.

One row per layer: a node, with the elementwise nodes that only transform its output
(activation, BatchNorm) merged into it, as a lecture table shows "conv + ReLU" as one layer.

* **Parameters** are counted the way torch counts them: weights, biases and BatchNorm γ/β, not
  running statistics — whatever form the graph has (a folded Conv remembers what it absorbed).
  The graph's own initializer size is reported beside it.
* **MACs** are multiply-accumulates of convolutions and dense layers (what torchvision's
  "GFLOPS" column counts); **FLOPs = 2 × MACs**.
* **Activations** are the elements of each layer's output (views such as Flatten cost none).
* **Training memory** (the lecture's estimate) = 2 × activation bytes (value and gradient)
  + 3 × parameter bytes (value, gradient, momentum), float32. Adam would need 4×.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import onnx_ir as ir

from graphgen.elementwise import ACTIVATIONS
from graphgen.metadata import ARCHITECTURE, REFERENCE_PARAMS
from graphgen.passes.inline import inline_functions

BYTES_PER_ELEMENT = 4
ACTIVATION_FACTOR = 2
PARAMETER_FACTOR = 3
MIB = 1024**2
# Ops that transform one input elementwise; merged into the layer that produced that input.
_FOLLOWERS = ACTIVATIONS | {"BatchNormalization"}
_VIEWS = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity"}
_BN_STATISTICS = (3, 4)  # BatchNormalization inputs: running mean and variance
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass
class LayerStats:
    name: str
    op: str
    output_shape: list[int]
    params: int = 0
    initializer_elements: int = 0
    macs: int = 0
    activations: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def activation_bytes(self) -> int:
        return self.activations * BYTES_PER_ELEMENT

    @property
    def training_memory_bytes(self) -> int:
        # The input batch is stored once: nothing computes a gradient for it.
        factor = 1 if self.op == "Input" else ACTIVATION_FACTOR
        return (factor * self.activations + PARAMETER_FACTOR * self.params) * BYTES_PER_ELEMENT

    def as_dict(self) -> dict:
        return asdict(self) | {
            "flops": self.flops,
            "activation_bytes": self.activation_bytes,
            "training_memory_bytes": self.training_memory_bytes,
        }


@dataclass
class ModelStats:
    architecture: str
    batch: int
    rows: list[LayerStats] = field(default_factory=list)

    def total(self, attribute: str) -> int:
        return sum(getattr(row, attribute) for row in self.rows)

    @property
    def params(self) -> int:
        return self.total("params")

    @property
    def macs(self) -> int:
        return self.total("macs")

    def as_dict(self) -> dict:
        totals = {
            key: self.total(key)
            for key in (
                "params",
                "initializer_elements",
                "macs",
                "flops",
                "activations",
                "activation_bytes",
                "training_memory_bytes",
            )
        }
        return {
            "architecture": self.architecture,
            "batch": self.batch,
            "conventions": {
                "macs": "multiply-accumulates of Conv/Gemm/MatMul",
                "flops": "2 x MACs",
                "params": "weights, biases, BatchNorm gamma/beta; not running statistics",
                "training_memory": f"{ACTIVATION_FACTOR} x activation bytes + {PARAMETER_FACTOR} x parameter bytes, float32",
            },
            "rows": [row.as_dict() for row in self.rows],
            "totals": totals,
        }


def _shape(value: ir.Value | None, batch: int) -> list[int]:
    if value is None or value.shape is None:
        return []
    return [dim if isinstance(dim, int) else batch for dim in value.shape]


def _node_params(node: ir.Node, counted: set[str]) -> tuple[int, int]:
    """(reference parameters, initializer elements) of the node's constant inputs, each counted once.

    An initializer without data yet (a traced graph before its weights are filled) counts by its
    declared shape, so a network is counted without drawing its weights.
    """
    params = initializers = 0
    for index, value in enumerate(node.inputs):
        if value is None or not value.is_initializer() or value.name is None or value.name in counted:
            continue
        size, rank, floating = _initializer_size(value)
        if size is None:
            continue
        counted.add(value.name)
        initializers += size
        is_statistic = node.op_type == "BatchNormalization" and index in _BN_STATISTICS
        # Parameters are float tensors; scalars and integer shapes are constants, not weights. An
        # int8 model's weights are counted below, at the node that reads them dequantized.
        if floating and rank > 0 and not is_statistic and node.op_type not in _QDQ:
            params += size
    params += _dequantized_params(node, counted)
    if REFERENCE_PARAMS in node.metadata_props:
        params = int(node.metadata_props[REFERENCE_PARAMS])
    return params, initializers


def _dequantized_params(node: ir.Node, counted: set[str]) -> int:
    """The weights and biases ``node`` reads through a DequantizeLinear (an int8 model's), each counted once."""
    params = 0
    for value in node.inputs:
        producer = value.producer() if value is not None else None
        if producer is None or producer.op_type != "DequantizeLinear" or not producer.inputs:
            continue
        stored = producer.inputs[0]
        key = f"dequantized:{stored.name}" if stored is not None else ""
        if stored is None or not stored.is_initializer() or key in counted:
            continue
        size, rank, _ = _initializer_size(stored)
        if size is not None and rank > 0:
            counted.add(key)
            params += size
    return params


def _initializer_size(value: ir.Value) -> tuple[int | None, int, bool]:
    """(elements, rank, floating point) of an initializer's data, or of its declared shape and type."""
    if value.const_value is not None:
        tensor = value.const_value
        return tensor.size, tensor.shape.rank(), tensor.dtype.is_floating_point()
    dims = [dim for dim in value.shape or () if isinstance(dim, int)]
    if value.shape is None or value.dtype is None or len(dims) != len(value.shape):
        return None, 0, False
    return math.prod(dims), len(dims), value.dtype.is_floating_point()


def _node_macs(node: ir.Node, batch: int) -> int:
    if node.op_type == "Conv":
        weight = _shape(node.inputs[1], batch)
        return math.prod(_shape(node.outputs[0], batch)) * math.prod(weight[1:]) if weight else 0
    if node.op_type == "Gemm":
        rows, weight = _shape(node.inputs[0], batch), _shape(node.inputs[1], batch)
        return rows[0] * math.prod(weight) if rows and weight else 0
    if node.op_type == "MatMul":
        a, b = _shape(node.inputs[0], batch), _shape(node.inputs[1], batch)
        return math.prod(_shape(node.outputs[0], batch)) * (a[-1] if a else 0) if b else 0
    return 0


def _silu_pair(sigmoid: ir.Node) -> ir.Node | None:
    """The Mul of ``x · sigmoid(x)`` when x feeds exactly this Sigmoid and that Mul."""
    x = sigmoid.inputs[0]
    if x is None:
        return None
    users = {id(user): user for user, _ in x.uses()}
    muls = [user for user in users.values() if user is not sigmoid]
    if len(users) != 2 or len(muls) != 1 or muls[0].op_type != "Mul":
        return None
    return muls[0] if {id(v) for v in muls[0].inputs} == {id(x), id(sigmoid.outputs[0])} else None


def _silu_part(node: ir.Node) -> bool:
    """Whether ``node`` is the Sigmoid or the Mul of a SiLU whose input is ``node.inputs[0]``."""
    if node.op_type == "Sigmoid":
        return _silu_pair(node) is not None
    if node.op_type == "Mul" and len(node.inputs) == 2 and node.inputs[1] is not None:
        producer = node.inputs[1].producer()
        return producer is not None and producer.op_type == "Sigmoid" and _silu_pair(producer) is node
    return False


def _flat_graph(model: ir.Model) -> ir.Graph:
    """The graph with any local functions (--functions) inlined: counted under its node names."""
    return inline_functions(model).model.graph if model.functions else model.graph


@dataclass(frozen=True)
class ParameterCount:
    """A model's size two ways: as torch counts its parameters, and as the ONNX file stores it."""

    parameters: int  # weights and biases, BatchNorm's scale and shift; not its running statistics
    initializer_elements: int  # every initializer's elements: folded statistics and constants included

    def describe(self) -> str:
        return f"{self.parameters:,} parameters ({self.initializer_elements:,} initializer elements)"


def count_parameters(model: ir.Model) -> ParameterCount:
    """The one parameter count of graphgen (build, convert, stats): torch's, beside the initializers' size."""
    graph = _flat_graph(model)
    counted: set[str] = set()
    params = initializers = 0
    for node in graph:
        node_params, node_initializers = _node_params(node, counted)
        params, initializers = params + node_params, initializers + node_initializers
    return ParameterCount(params, initializers)


@dataclass(frozen=True)
class Layer:
    """One layer as graphgen names it: a node with the elementwise nodes that only transform its output.

    ``name`` is the first node's (``layer3.1.conv2``, the reference ``state_dict``'s module path),
    ``output`` the value the layer hands on (its last node's first output). ``graphgen stats`` gives
    one row per layer; int8's sensitivity report one SQNR per layer.
    """

    name: str
    op: str  # the first node's op with its followers': Conv+Relu, Conv+SiLU
    nodes: tuple[ir.Node, ...]

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(node.name or "" for node in self.nodes)

    @property
    def output(self) -> ir.Value:
        return self.nodes[-1].outputs[0]

    @property
    def inputs(self) -> list[ir.Value]:
        """The values the layer reads from outside itself (initializers left out)."""
        inside = {id(node) for node in self.nodes}
        return [
            value
            for node in self.nodes
            for value in node.inputs
            if value is not None and not value.is_initializer() and id(value.producer()) not in inside
        ]


def layers(graph: ir.Graph) -> list[Layer]:
    """The layers of ``graph`` in order: each node joins the layer of its input when it only transforms it."""
    groups: list[list[ir.Node]] = []
    ops: list[str] = []
    group_of: dict[int, int] = {}  # id(value) -> the group whose output it is
    for node in graph:
        source = node.inputs[0] if node.inputs else None
        # The layer this node may join: its input's, unless that input is also a graph output.
        index = group_of.get(id(source)) if source is not None and not source.is_graph_output() else None
        if index is not None and _silu_part(node):
            # SiLU = x · sigmoid(x): the Sigmoid and the Mul together are the layer's activation.
            ops[index] += "+SiLU" if node.op_type == "Mul" else ""
        elif index is not None and source is not None and node.op_type in _FOLLOWERS and len(source.uses()) == 1:
            ops[index] += f"+{node.op_type}"
        else:
            index = len(groups)
            groups.append([])
            ops.append(node.op_type)
        groups[index].append(node)
        group_of[id(node.outputs[0])] = index
    return [Layer(nodes[0].name or nodes[0].op_type, op, tuple(nodes)) for nodes, op in zip(groups, ops)]


def layer_stats(model: ir.Model, batch: int = 1) -> ModelStats:
    """Statistics of every layer of ``model`` for a batch of ``batch`` inputs."""
    # a --functions model is counted flat, under its node names
    graph = _flat_graph(model)
    stats = ModelStats(model.metadata_props.get(ARCHITECTURE, graph.name or "model"), batch)
    for value in graph.inputs:
        if value.is_initializer():
            continue
        shape = _shape(value, batch)
        stats.rows.append(LayerStats(value.name or "input", "Input", shape, activations=math.prod(shape)))

    counted: set[str] = set()
    for layer in layers(graph):
        first = layer.nodes[0]
        params, initializers = _node_params(first, counted)
        shape = _shape(first.outputs[0], batch)
        activations = 0 if first.op_type in _VIEWS else math.prod(shape)
        row = LayerStats(layer.name, layer.op, shape, params, initializers, _node_macs(first, batch), activations)
        for follower in layer.nodes[1:]:
            params, initializers = _node_params(follower, counted)
            row.params += params
            row.initializer_elements += initializers
            if not _silu_part(follower):  # a SiLU's Mul has the shape of its input already
                row.output_shape = _shape(follower.outputs[0], batch)
        stats.rows.append(row)
    return stats


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def format_table(stats: ModelStats) -> str:
    """The lecture-style table, with a totals row."""
    header = ("layer", "op", "output", "params", "MACs", "FLOPs", "activations", "act MiB", "train MiB")
    lines = []
    for row in stats.rows:
        lines.append(
            (
                row.name,
                row.op,
                "x".join(map(str, row.output_shape)),
                f"{row.params:,}",
                _human(row.macs),
                _human(row.flops),
                f"{row.activations:,}",
                f"{row.activation_bytes / MIB:.1f}",
                f"{row.training_memory_bytes / MIB:.1f}",
            )
        )
    totals = stats.as_dict()["totals"]
    lines.append(
        (
            "TOTAL",
            "",
            "",
            f"{totals['params']:,}",
            _human(totals["macs"]),
            _human(totals["flops"]),
            f"{totals['activations']:,}",
            f"{totals['activation_bytes'] / MIB:.1f}",
            f"{totals['training_memory_bytes'] / MIB:.1f}",
        )
    )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    numeric = set(range(3, len(header)))

    def render(cells) -> str:
        return "  ".join(
            str(c).rjust(w) if i in numeric else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    rule = "  ".join("-" * w for w in widths)
    body = [render(header), rule, *map(render, lines[:-1]), rule, render(lines[-1])]
    notes = (
        f"batch {stats.batch}; FLOPs = 2 x MACs; params exclude BatchNorm running statistics; "
        f"initializer elements in the graph: {totals['initializer_elements']:,}; "
        f"train MiB = {ACTIVATION_FACTOR} x activations + {PARAMETER_FACTOR} x params (float32)"
    )
    return "\n".join([*body, notes])


def summary(stats: ModelStats) -> str:
    """One line: the totals people quote."""
    return (
        f"{stats.architecture}: {stats.params:,} parameters, {stats.macs / 1e9:.3f} GMACs "
        f"({2 * stats.macs / 1e9:.3f} GFLOPs) at batch {stats.batch}, "
        f"{stats.total('activations'):,} activations, "
        f"~{stats.total('training_memory_bytes') / MIB:,.1f} MiB to train"
    )
