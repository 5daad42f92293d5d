"""Fold BatchNormalization, and constant scales, into the convolution before them.

Rewrite rules, per output channel c, with t = γ / sqrt(σ² + ε)::

    BatchNormalization(Conv(x, W, b), γ, β, μ, σ²)  ->  Conv(x, W · t, (b − μ) · t + β)
    Mul(Conv(x, W, b), s)                            ->  Conv(x, W · s, b · s)

(b = 0 when the convolution had no bias; a scaled bias-free Conv stays bias-free.) ``s`` is a
constant scalar or per-channel factor (Inception-ResNet's residual scale). A rule applies only
where the Conv output feeds that node alone, the BatchNormalization is in inference mode, and
every parameter is constant: an initializer, a Constant node, or either behind Identity nodes
(torch's TorchScript exporter shares equal initializers that way). Nodes are visited in graph
order, so a Conv takes in its BatchNorm first and then a scale after it. The folded weights keep
the convolution's dtype. The folded Conv keeps its name and records what it absorbed, plus the
parameter count the reference model has for conv and BatchNorm (conv weight, conv bias if any,
γ and β), so statistics stay comparable with the unfolded form; a scale is no parameter.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphgen.metadata import FOLDED_FROM, FOLDED_SCALE, REFERENCE_PARAMS
from graphgen.passes.base import (
    GraphPass,
    PassResult,
    batchnorm_scale_shift,
    constant,
    inference_batchnorm,
    known_constant,
    only_consumer,
    per_channel,
    present,
    replace_value,
    set_private_input,
)
from graphgen.passes.names import Names, sibling_name
from graphgen.passes.provenance import describe, in_module_tree


class FoldBatchNormPass(GraphPass):
    """Every Conv → BatchNormalization pair, and every Conv → constant Mul, folded into one Conv."""

    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        graph = model.graph
        names = Names(graph)
        folded = 0
        for node in [node for node in graph if node.op_type in ("BatchNormalization", "Mul") and node.domain == ""]:
            conv, affine = _conv_and_affine(node)
            if conv is not None and affine is not None and _fold(graph, conv, node, *affine, names):
                folded += 1
        if folded:
            notes.append(f"{folded} BatchNormalization(s) and constant scale(s) folded into convolutions")
        return folded


def foldable(graph: ir.Graph) -> list[tuple[ir.Node, ir.Node]]:
    """The (Conv, BatchNormalization or constant Mul) pairs :class:`FoldBatchNormPass` would fold now."""
    pairs = []
    for node in graph:
        if node.op_type in ("BatchNormalization", "Mul") and node.domain == "":
            conv, affine = _conv_and_affine(node)
            if conv is not None and affine is not None:
                pairs.append((conv, node))
    return pairs


def fold_batchnorm(model: ir.Model) -> PassResult:
    """Return a copy of ``model`` with every Conv → BatchNormalization (or constant Mul) folded into one Conv."""
    return FoldBatchNormPass()(model)


def _conv_and_affine(node: ir.Node) -> tuple[ir.Node | None, tuple[np.ndarray, np.ndarray | None] | None]:
    """The Conv before ``node`` that nothing else reads, and (t, s) with node(y) = y · t + s per channel.

    s is None for a Mul (a pure scale); (None, None) when ``node`` follows no such Conv.
    """
    orders: list[tuple[ir.Value | None, ir.Value | None]]
    if node.op_type == "BatchNormalization":
        orders = [(node.inputs[0], None)]
    else:  # Mul: the Conv may be either operand, the other must be a constant factor
        orders = [(node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])]
    for data, factor in orders:
        conv = data.producer() if data is not None else None
        if conv is None or conv.op_type != "Conv" or conv.domain != "" or only_consumer(conv.outputs[0]) is not node:
            continue
        weight = constant(conv.inputs[1])
        if weight is None:
            return None, None
        if node.op_type == "BatchNormalization":
            return conv, batchnorm_scale_shift(node) if inference_batchnorm(node) else None
        array = constant(factor)
        scale = per_channel(array, weight.shape[0], rank=weight.ndim) if array is not None else None
        return conv, (scale, None) if scale is not None else None
    return None, None


def _fold(
    graph: ir.Graph, conv: ir.Node, node: ir.Node, scale: np.ndarray, shift: np.ndarray | None, names: Names
) -> bool:
    """Fold node(y) = y · scale + shift (shift None: a pure scale) into ``conv``; False if it cannot be."""
    weight = known_constant(conv.inputs[1])  # checked by _conv_and_affine
    bias_value = conv.inputs[2] if len(conv.inputs) > 2 else None
    bias = constant(bias_value) if bias_value is not None else None
    if bias_value is not None and bias is None:
        return False  # a computed bias cannot be folded ahead of time
    # Scale factors come in float64; the weights scale in float32 at least (float64 arithmetic over
    # every weight doubled build times for no visible gain: the result is stored in float32 anyway).
    compute = np.promote_types(weight.dtype, np.float32)
    new_weight = weight.astype(compute, copy=False) * scale.astype(compute).reshape(-1, *([1] * (weight.ndim - 1)))
    dtype = weight.dtype  # a float16 model stays float16
    weight_name = present(conv.inputs[1]).name or f"{conv.name or 'conv'}.weight"
    set_private_input(graph, conv, 1, new_weight, dtype, names, weight_name)
    if bias is not None or shift is not None:
        new_bias = (bias.astype(np.float64) if bias is not None else 0.0) * scale + (
            shift if shift is not None else 0.0
        )
        bias_name = bias_value.name if bias_value is not None and bias_value.name else sibling_name(weight_name, "bias")
        set_private_input(graph, conv, 2, new_bias, dtype, names, bias_name)

    if node.op_type == "BatchNormalization":
        gamma, beta = known_constant(node.inputs[1]), known_constant(node.inputs[2])
        own = int(conv.metadata_props.get(REFERENCE_PARAMS, weight.size + (bias.size if bias is not None else 0)))
        conv.metadata_props[REFERENCE_PARAMS] = str(own + gamma.size + beta.size)
        conv.metadata_props[FOLDED_FROM] = node.name or ""
        # A built graph's description names the folded BatchNorm from FOLDED_FROM; others say it in words.
        describe(conv, None if in_module_tree(conv) else f"BatchNormalization {node.name} folded in")
    else:
        conv.metadata_props[FOLDED_SCALE] = node.name or ""
        describe(conv, f"constant scale {node.name} folded in")
    replace_value(node.outputs[0], conv.outputs[0])  # also where the node gave a graph output
    graph.remove(node, safe=True)
    return True
