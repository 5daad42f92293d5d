"""Fold BatchNormalization into the convolution before it.

Rewrite rule, per output channel c, with t = γ / sqrt(σ² + ε)::

    BatchNormalization(Conv(x, W, b), γ, β, μ, σ²)  ->  Conv(x, W · t, (b − μ) · t + β)

(b = 0 when the convolution had no bias.) It applies only where the Conv output feeds the
BatchNormalization alone, the BatchNormalization is in inference mode, and every parameter is
constant: an initializer, a Constant node, or either behind Identity nodes (torch's TorchScript
exporter shares equal initializers that way). The folded weights keep the convolution's dtype.
The folded Conv keeps its name and records the BatchNormalization it absorbed, plus the
parameter count the reference model has for the pair (conv weight, conv bias if any, γ and β),
so statistics stay comparable with the unfolded form.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphgen.metadata import FOLDED_FROM, REFERENCE_PARAMS
from graphgen.passes.base import (
    GraphPass,
    PassResult,
    batchnorm_scale_shift,
    constant,
    inference_batchnorm,
    known_constant,
    only_consumer,
    present,
    replace_value,
    set_private_input,
)
from graphgen.passes.names import Names, sibling_name


class FoldBatchNormPass(GraphPass):
    """Every Conv → BatchNormalization pair folded into one Conv (the rule above)."""

    def rewrite(self, model: ir.Model) -> int:
        graph = model.graph
        names = Names(graph)
        folded = 0
        for bn in [node for node in graph if node.op_type == "BatchNormalization" and node.domain == ""]:
            conv = bn.inputs[0].producer() if bn.inputs[0] is not None else None
            if conv is None or conv.op_type != "Conv" or conv.domain != "" or only_consumer(conv.outputs[0]) is not bn:
                continue
            if inference_batchnorm(bn) and _fold_pair(graph, conv, bn, names):
                folded += 1
        return folded


def fold_batchnorm(model: ir.Model) -> PassResult:
    """Return a copy of ``model`` with every Conv → BatchNormalization pair folded into one Conv."""
    return FoldBatchNormPass()(model)


def _fold_pair(graph: ir.Graph, conv: ir.Node, bn: ir.Node, names: Names) -> bool:
    weight = constant(conv.inputs[1])
    bias_value = conv.inputs[2] if len(conv.inputs) > 2 else None
    bias = constant(bias_value) if bias_value is not None else None
    scale_shift = batchnorm_scale_shift(bn)
    if weight is None or scale_shift is None:
        return False
    if bias_value is not None and bias is None:
        return False  # a computed bias cannot be folded ahead of time
    scale, shift = scale_shift
    # Scale factors come in float64; the weights scale in float32 at least (float64 arithmetic over
    # every weight doubled build times for no visible gain: the result is stored in float32 anyway).
    compute = np.promote_types(weight.dtype, np.float32)
    new_weight = weight.astype(compute, copy=False) * scale.astype(compute).reshape(-1, *([1] * (weight.ndim - 1)))
    new_bias = (bias.astype(np.float64) if bias is not None else 0.0) * scale + shift

    gamma, beta = known_constant(bn.inputs[1]), known_constant(bn.inputs[2])
    reference_params = weight.size + (bias.size if bias is not None else 0) + gamma.size + beta.size
    dtype = weight.dtype  # a float16 model stays float16
    weight_name = present(conv.inputs[1]).name or f"{conv.name or 'conv'}.weight"
    set_private_input(graph, conv, 1, new_weight, dtype, names, weight_name)
    bias_name = bias_value.name if bias_value is not None and bias_value.name else sibling_name(weight_name, "bias")
    set_private_input(graph, conv, 2, new_bias, dtype, names, bias_name)

    conv.metadata_props[FOLDED_FROM] = bn.name or ""
    conv.metadata_props[REFERENCE_PARAMS] = str(reference_params)
    replace_value(bn.outputs[0], conv.outputs[0])  # also where the BatchNorm gave a graph output
    graph.remove(bn, safe=True)
    return True
