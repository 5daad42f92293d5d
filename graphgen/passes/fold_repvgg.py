"""Fold RepVGG blocks — k×k conv, 1×1 conv and identity branches summed — into one convolution.

Rewrite rule (RepVGG paper, Eq. 3 and Fig. 4). The terms of a sum (``Add`` tree or ``Sum``) that
are branches of one tensor x, each

* a Conv of x (any odd kernel, optionally followed by its inference BatchNormalization), or
* an identity of x: x itself, BatchNormalization(x), or x · s (``Mul`` by a per-channel
  constant, the form some exporters and simplifiers give a lone BatchNorm), or
* a constant per-channel tensor (the ``Add`` half of such an affine identity),

at least two of them and one a Conv, become ``Conv(x, K, b)`` (any other term is added to it as it
is: ParNet's SE-gated identity survives fusion), where, writing each branch's
BatchNorm as y·t + s (t = γ/√(σ²+ε), s = β − μ·t):

* a k×k branch contributes W·t zero-padded to the largest kernel K (its taps land in the centre),
  and b·t + s;
* an identity branch contributes the kernel K[i, i mod (C/g), centre] = t_i (also for groups g > 1)
  and s;
* constants add to the bias.

Every conv must share stride, group and dilation 1, and its padding must be the large kernel's
minus (K−k)/2 on each side, so all branches see the same window; an identity needs stride 1, as
many output as input channels and 'same' padding. The new Conv is named after the block, e.g.
``stages.1.0.reparam_conv`` (timm's name for the deployed convolution).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from graphgen.passes.base import (
    GraphPass,
    PassResult,
    add_initializer,
    batchnorm_scale_shift,
    constant,
    conv_geometry,
    inference_batchnorm,
    is_sum,
    known_constant,
    only_consumer,
    per_channel,
    present,
    replace_value,
    rewrite_blocks,
    sum_tree,
)
from graphgen.passes.names import Names, common_name, join_name
from graphgen.passes.provenance import describe, span, take_scope

DEPLOY_NAME = "reparam_conv"


@dataclass
class Term:
    """One branch of the sum, as a kernel-to-be: ``conv`` (None for an identity), scale and shift."""

    nodes: list[ir.Node]  # what the branch consists of (removed after folding)
    conv: ir.Node | None
    scale: np.ndarray | float  # per output channel
    shift: np.ndarray | float


class FoldRepVGGPass(GraphPass):
    """Every RepVGG-style block folded into one convolution (the rule above)."""

    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        return rewrite_blocks(model.graph, _next_block, _fold)


def fold_repvgg(model: ir.Model) -> PassResult:
    """Return a copy of ``model`` with every RepVGG-style block folded into one convolution."""
    return FoldRepVGGPass()(model)


@dataclass
class Block:
    root: ir.Node  # the outermost Add/Sum
    nodes: list[ir.Node]  # everything the folded Conv replaces
    source: ir.Value  # x
    kernel: np.ndarray
    bias: np.ndarray
    geometry: dict
    convs: list[ir.Node]
    others: list[ir.Value]  # terms of the sum that are no branch of x: added after the Conv


def _next_block(graph: ir.Graph) -> Block | None:
    for node in graph:
        if not is_sum(node):
            continue
        consumer = only_consumer(node.outputs[0])
        if consumer is not None and is_sum(consumer):
            continue  # not the root of its sum
        tree_nodes, maybe_leaves = sum_tree(node)
        leaves = [leaf for leaf in maybe_leaves if leaf is not None]
        if len(leaves) != len(maybe_leaves):
            continue
        constants = [array for array in (constant(leaf) for leaf in leaves) if array is not None]
        for source, terms, others in _candidate_groups([leaf for leaf in leaves if constant(leaf) is None]):
            folded = _kernel_and_bias(terms, constants)
            if folded is not None:
                kernel, bias, geometry = folded
                branch_nodes = [n for term in terms for n in term.nodes]
                nodes = list({id(n): n for n in branch_nodes + tree_nodes}.values())
                convs = [term.conv for term in terms if term.conv is not None]
                return Block(node, nodes, source, kernel, bias, geometry, convs, others)
    return None


def _candidate_groups(leaves: list[ir.Value]):
    """For each x that two or more leaves are branches of (one a Conv): (x, those branches, the other leaves)."""
    found = [(leaf, _term(leaf)) for leaf in leaves]
    sources = {id(term[0]): term[0] for _, term in found if term is not None}
    for source in sources.values():
        terms, others = [], []
        for leaf, term in found:
            if term is not None and term[0] is source:
                terms.append(term[1])
            elif leaf is source:  # x itself: the identity branch without BatchNorm
                terms.append(Term([], None, 1.0, 0.0))
            else:
                others.append(leaf)  # added to the folded Conv as it is (e.g. ParNet's gated identity)
        if len(terms) >= 2 and any(term.conv is not None for term in terms):
            yield source, terms, others


def _term(leaf: ir.Value) -> tuple[ir.Value, Term] | None:
    """(what the branch reads, the branch) for a Conv [+BN], BN or Mul leaf; None otherwise."""
    node = leaf.producer()
    if node is None or node.domain != "" or only_consumer(leaf) is None:
        return None  # read elsewhere too: the branch's value must survive, nothing to fold
    if node.op_type == "Conv":
        return (present(node.inputs[0]), Term([node], node, 1.0, 0.0)) if _foldable_conv(node) else None
    if node.op_type == "Mul":
        for data, factor in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
            factor_array = constant(factor)
            if data is not None and constant(data) is None and factor_array is not None:
                return data, Term([node], None, factor_array, 0.0)
        return None
    scale_shift = batchnorm_scale_shift(node) if inference_batchnorm(node) else None
    if scale_shift is None:
        return None
    scale, shift = (v.reshape(-1, 1, 1) for v in scale_shift)  # per channel of NCHW
    data = present(node.inputs[0])
    conv = data.producer()
    if conv is not None and conv.op_type == "Conv" and only_consumer(data) is node and _foldable_conv(conv):
        return present(conv.inputs[0]), Term([conv, node], conv, scale, shift)
    return data, Term([node], None, scale, shift)


def _foldable_conv(conv: ir.Node) -> bool:
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    return conv.domain == "" and conv_geometry(conv) is not None and (bias is None or constant(bias) is not None)


def _kernel_and_bias(terms: list[Term], constants: list[np.ndarray]):
    """The summed kernel, bias and the folded Conv's geometry; None if the branches do not line up."""
    convs = [term.conv for term in terms if term.conv is not None]
    geometries = [geometry for conv in convs if (geometry := conv_geometry(conv)) is not None]
    weights = [known_constant(conv.inputs[1]) for conv in convs]
    if len(geometries) != len(convs):
        return None
    if any(g["dilations"] != (1, 1) for g in geometries) or len({(g["strides"], g["group"]) for g in geometries}) != 1:
        return None
    if len({w.shape[:2] for w in weights}) != 1:
        return None
    size = (max(w.shape[2] for w in weights), max(w.shape[3] for w in weights))
    largest = next(g for g, w in zip(geometries, weights) if w.shape[2:] == size)
    for g, w in zip(geometries, weights):
        margin = [(size[0] - w.shape[2]) / 2, (size[1] - w.shape[3]) / 2]
        expected = [p - m for p, m in zip(largest["pads"], margin * 2)]
        if any(m != int(m) for m in margin) or list(g["pads"]) != expected:
            return None  # the branches would look at different windows
    out_channels, in_per_group = weights[0].shape[:2]
    group = largest["group"]
    identities = [term for term in terms if term.conv is None]
    centre = ((size[0] - 1) // 2, (size[1] - 1) // 2)
    if identities and (
        largest["strides"] != (1, 1)
        or out_channels != in_per_group * group
        or size[0] % 2 == 0
        or size[1] % 2 == 0
        or list(largest["pads"]) != [centre[0], centre[1], centre[0], centre[1]]
    ):
        return None  # identity needs stride 1, as many channels out as in and 'same' padding

    kernel = np.zeros((out_channels, in_per_group, *size))
    bias = np.zeros(out_channels)
    for term in terms:
        scale, shift = per_channel(term.scale, out_channels), per_channel(term.shift, out_channels)
        if scale is None or shift is None:
            return None
        if term.conv is None:
            channels = np.arange(out_channels)
            kernel[channels, channels % in_per_group, centre[0], centre[1]] += scale
        else:
            weight = known_constant(term.conv.inputs[1]).astype(np.float64) * scale[:, None, None, None]
            top, left = (size[0] - weight.shape[2]) // 2, (size[1] - weight.shape[3]) // 2
            kernel[:, :, top : top + weight.shape[2], left : left + weight.shape[3]] += weight
            conv_bias = constant(term.conv.inputs[2]) if len(term.conv.inputs) > 2 and term.conv.inputs[2] else None
            if conv_bias is not None:
                bias += conv_bias.astype(np.float64) * scale
        bias += shift
    for array in constants:
        vector = per_channel(array, out_channels)
        if vector is None:
            return None
        bias += vector
    return kernel, bias, largest


def _fold(graph: ir.Graph, block: Block, names: Names) -> None:
    dtype = known_constant(block.convs[0].inputs[1]).dtype
    # Named after the block: the common path of its nodes, else of its weights (dynamo names nodes
    # node_Conv_12 but keeps module paths on weights), else after the sum it replaces.
    weight_prefix = common_name(
        [present(n.inputs[1]).name or "" for n in block.nodes if n.op_type in ("Conv", "BatchNormalization")], ""
    )
    node_prefix = common_name([n.name or "" for n in block.nodes], "") or weight_prefix
    node_name = join_name(node_prefix, DEPLOY_NAME) if node_prefix else f"{block.root.name}_{DEPLOY_NAME}"
    base = join_name(weight_prefix, DEPLOY_NAME) if weight_prefix else node_name
    weight = add_initializer(graph, names, f"{base}.weight", block.kernel, dtype)
    bias = add_initializer(graph, names, f"{base}.bias", block.bias, dtype)
    attributes = {
        "kernel_shape": list(block.kernel.shape[2:]),
        "strides": list(block.geometry["strides"]),
        "pads": list(block.geometry["pads"]),
        "dilations": [1, 1],
        "group": block.geometry["group"],
    }
    conv = ir.node("Conv", [block.source, weight, bias], attributes, name=names.fresh(node_name))
    out = conv.outputs[0]
    out.name = names.fresh(f"v_{conv.name}")
    out.type, out.shape = block.root.outputs[0].type, block.root.outputs[0].shape
    branches = [n.name or n.op_type for n in block.nodes if not is_sum(n)]
    take_scope(conv, block.root)  # the block's own sum: the folded Conv belongs to the block
    kernel = "x".join(str(k) for k in block.kernel.shape[2:])
    describe(conv, f"RepVGG branches folded into one {kernel} convolution: {span(branches)}")
    new_nodes, result = [conv], out
    for other in block.others:
        add = ir.node("Add", [result, other], name=names.fresh(f"{conv.name}.add"))
        result = add.outputs[0]
        result.name = names.fresh(f"v_{add.name}")
        result.type, result.shape = block.root.outputs[0].type, block.root.outputs[0].shape
        take_scope(add, block.root)
        describe(add, f"what the sum {block.root.name} adds besides the folded branches")
        new_nodes.append(add)
    graph.insert_before(block.root, new_nodes)
    replace_value(block.root.outputs[0], result)
    graph.remove(block.nodes, safe=True)
