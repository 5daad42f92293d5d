"""Rewrite split-transform-merge blocks (ResNeXt forms a and b) as grouped convolutions (form c).

Rewrite rule. G ≥ 2 branches read one tensor x and apply the same chain of operations — a
Conv (group 1) then any sequence of Conv, inference BatchNormalization and elementwise
activations, with at least two convolutions — and are merged by a channel ``Concat`` of the
branch outputs (form b) or by a sum (``Add`` tree or ``Sum``) when every branch ends in Conv
[+ BatchNormalization] (form a). Branch i only ever sees its own channels, so, in merge order:

* first Conv (x → d channels):  Conv(x, [W₁; …; W_G], [b₁; …; b_G])            — C → G·d, group 1
* every later Conv (group g):   Conv(y, [W₁; …; W_G], [b₁; …; b_G], group=G·g) — block diagonal
  (ONNX group j reads input channels j·d/g … (j+1)·d/g − 1: the stacking order)
* BatchNormalization:           γ, β, μ, σ² concatenated in the same order; activations: one node
* Concat merge:                 the stacked chain's output is the concatenation itself
* sum merge:                    Σᵢ (Wᵢ ∗ yᵢ + bᵢ) = [W₁ … W_G] ∗ [y₁; …; y_G] + Σᵢ bᵢ — one Conv
  whose weights are concatenated along the input axis, each branch's BatchNormalization
  folded into its Wᵢ, bᵢ first; anything else the sum adds (a shortcut) is added afterwards.

Matching is by structure, never by name, so graphs exported by ``torch.onnx.export`` work too.
Rewritten nodes record how many branches they replace under ``graphgen.grouped_branches``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from graphgen.elementwise import ACTIVATIONS
from graphgen.metadata import GROUPED_FROM, REFERENCE_PARAMS
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
    replace_value,
    rewrite_blocks,
    sum_root,
    sum_tree,
)
from graphgen.passes.fold_batchnorm import FoldBatchNormPass, foldable
from graphgen.passes.names import Names, common_name
from graphgen.passes.provenance import describe, span, take_scope

# Ops with no per-channel parameter, so one node serves every branch's channels.
_SHAREABLE = ACTIVATIONS | {"Identity"}


@dataclass
class Block:
    """G matching branches from ``source`` and how they are merged."""

    source: ir.Value
    branches: list[list[ir.Node]]  # in merge order
    merge_nodes: list[ir.Node]  # the Concat, or the Add/Sum nodes of the sum
    output: ir.Value  # what the rest of the graph reads
    other_terms: list[ir.Value]  # further values the sum adds (e.g. a shortcut), kept as they are

    @property
    def by_sum(self) -> bool:
        return self.merge_nodes[0].op_type != "Concat"


class GroupBranchesPass(GraphPass):
    """Every multibranch block rewritten as a grouped convolution (the rule above).

    A sum of branches (form a) often has its BatchNormalization after the sum, which only now
    follows a convolution. Where the input had no Conv → BatchNorm pair of its own left (an
    inference-form graph), the pass folds these too, so the result is in inference form as well;
    otherwise it leaves them, as the rest of the graph, and notes that ``--fold-bn`` folds them.
    """

    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        graph = model.graph
        training_form = bool(foldable(graph))  # the input still has Conv → BatchNorm pairs of its own
        rewrites = rewrite_blocks(graph, _next_block, _rewrite)
        pairs = foldable(graph)
        uncovered = sum(1 for conv, _ in pairs if GROUPED_FROM in conv.metadata_props)
        if uncovered and not training_form:  # on this copy: its note says how many it folded
            FoldBatchNormPass().rewrite(model, notes)
        elif uncovered:
            notes.append(
                f"{uncovered} BatchNormalization(s) follow the grouped convolutions and stay, as the input's own "
                f"Conv -> BatchNormalization pairs do: --fold-bn folds them ({len(pairs)} in all)"
            )
        return rewrites


def group_branches(model: ir.Model) -> PassResult:
    """Return a copy of ``model`` with every multibranch block rewritten as a grouped convolution."""
    return GroupBranchesPass()(model)


def _next_block(graph: ir.Graph) -> Block | None:
    for node in graph:
        for source in node.outputs if node.op_type != "Constant" else ():
            block = _block_from(source)
            if block is not None:
                return block
    for source in graph.inputs:
        block = _block_from(source)
        if block is not None:
            return block
    return None


def _block_from(source: ir.Value) -> Block | None:
    """The first multibranch block whose branches all read ``source``, if any."""
    starts = {id(node): node for node, index in source.uses() if index == 0 and _is_conv(node)}
    if len(starts) < 2:
        return None
    by_merge: dict[int, tuple[ir.Node, list[list[ir.Node]]]] = {}
    for start in starts.values():
        chain = _chain(start)
        end = only_consumer(chain[-1].outputs[0])
        if end is None or (end.op_type != "Concat" and not is_sum(end)):
            continue
        merge = end if end.op_type == "Concat" else sum_root(end)
        by_merge.setdefault(id(merge), (merge, []))[1].append(chain)
    for merge, chains in by_merge.values():
        if merge.op_type == "Concat":
            alike = [chains]  # a concatenation must consist of the branches alone
        else:  # a sum may add other chains from x too (a projection shortcut): they stay other terms
            by_structure: dict[tuple, list[list[ir.Node]]] = {}
            for chain in chains:
                by_structure.setdefault(tuple(_signature(node) for node in chain), []).append(chain)
            alike = list(by_structure.values())
        for group in alike:
            block = _as_block(source, merge, group) if len(group) >= 2 else None
            if block is not None and _compatible(block):
                return block
    return None


def _is_conv(node: ir.Node) -> bool:
    return node.op_type == "Conv" and node.domain == "" and conv_geometry(node) is not None


def _chain(start: ir.Node) -> list[ir.Node]:
    """``start`` and the Conv / BatchNormalization / activation nodes that alone follow it."""
    chain = [start]
    while True:
        follower = only_consumer(chain[-1].outputs[0])
        if follower is None or follower.domain != "" or follower.inputs[0] is not chain[-1].outputs[0]:
            return chain
        if sum(1 for _ in chain[-1].outputs[0].uses()) != 1:
            return chain  # read twice by one node (e.g. as two inputs): not a plain chain link
        if not (_is_conv(follower) or inference_batchnorm(follower) or follower.op_type in _SHAREABLE):
            return chain
        chain.append(follower)


def _as_block(source: ir.Value, merge: ir.Node, chains: list[list[ir.Node]]) -> Block | None:
    by_output = {id(chain[-1].outputs[0]): chain for chain in chains}
    if merge.op_type == "Concat":
        if merge.attributes.get_int("axis", 0) not in (1, -3) or len(merge.inputs) != len(chains):
            return None
        if len({id(v) for v in merge.inputs}) != len(chains) or any(id(v) not in by_output for v in merge.inputs):
            return None  # the concatenation holds something besides these branches
        ordered = [by_output[id(v)] for v in merge.inputs]
        return Block(source, ordered, [merge], merge.outputs[0], [])
    tree_nodes, leaves = sum_tree(merge)
    ordered = [by_output[id(v)] for v in leaves if id(v) in by_output]
    if len(ordered) != len(chains) or len({id(chain[0]) for chain in ordered}) != len(chains):
        return None  # a branch output summed twice cannot become one term
    others = [v for v in leaves if id(v) not in by_output and v is not None]
    if len(others) + len(ordered) != len(leaves):
        return None
    return Block(source, ordered, tree_nodes, merge.outputs[0], others)


def _signature(node: ir.Node) -> tuple | None:
    """What must be equal for nodes of different branches to be stacked into one (None: never)."""
    attributes = tuple(sorted((name, repr(attr.value)) for name, attr in node.attributes.items()))
    if node.op_type == "Conv":
        weight = known_constant(node.inputs[1])
        return ("Conv", attributes, weight.shape, str(weight.dtype))
    if node.op_type == "BatchNormalization":
        parameters = [p for v in node.inputs[1:5] if (p := constant(v)) is not None]
        if len(parameters) != 4:
            return None
        return ("BatchNormalization", attributes, tuple(p.shape for p in parameters))
    extra = tuple(_constant_bytes(v) for v in node.inputs[1:])  # Clip bounds
    if any(v is not None and b is None for v, b in zip(node.inputs[1:], extra)):
        return None  # an activation with a computed parameter cannot be shared
    return (node.op_type, attributes, extra)


def _constant_bytes(value: ir.Value | None) -> bytes | None:
    array = constant(value) if value is not None else None
    return None if array is None else array.tobytes() + str(array.shape).encode()


def _compatible(block: Block) -> bool:
    first = block.branches[0]
    if any(len(chain) != len(first) for chain in block.branches):
        return False
    if sum(node.op_type == "Conv" for node in first) < 2 or _group(first[0]) != 1:
        return False
    for position in range(len(first)):
        signatures = {_signature(chain[position]) for chain in block.branches}
        if len(signatures) != 1 or None in signatures:
            return False
    if block.by_sum:
        tail = _tail_start(first)
        if tail is None or _group(first[tail]) != 1:
            return False
    return True


def _group(conv: ir.Node) -> int | None:
    geometry = conv_geometry(conv)
    return geometry["group"] if geometry is not None else None


def _tail_start(chain: list[ir.Node]) -> int | None:
    """Index of the Conv that ends a summed branch (optionally followed by its BatchNorm)."""
    if chain[-1].op_type == "Conv":
        return len(chain) - 1
    if chain[-1].op_type == "BatchNormalization" and chain[-2].op_type == "Conv":
        return len(chain) - 2
    return None


def _rewrite(graph: ir.Graph, block: Block, names: Names) -> None:
    groups = len(block.branches)
    first = block.branches[0]
    tail_start = _tail_start(first) if block.by_sum else len(first)
    if tail_start is None:
        raise ValueError("a summed branch ends in no Conv: _compatible() should have refused it")
    stacked_length = tail_start
    merge = block.merge_nodes[0]  # the block's own op: what the new nodes take their module from
    new_nodes: list[ir.Node] = []
    current = block.source
    for position in range(stacked_length):
        column = [chain[position] for chain in block.branches]
        node = _stacked(graph, column, current, groups, names, first_conv=position == 0)
        _record(node, merge, f"{groups} branches stacked: {span([n.name or '' for n in column])}")
        new_nodes.append(node)
        current = node.outputs[0]
    if block.by_sum:
        tails = [chain[stacked_length:] for chain in block.branches]
        node = _summed_conv(graph, tails, current, names)
        replaced = [n.name or "" for tail in tails for n in tail] + [n.name or "" for n in block.merge_nodes]
        _record(node, merge, f"{groups} branches' last convolutions and their sum: {span(replaced)}")
        new_nodes.append(node)
        current = node.outputs[0]
        for term in block.other_terms:
            add = ir.node("Add", [current, term], name=names.fresh(f"{node.name}.add"))
            _name_output(add, block.output, names)
            _record(add, merge, f"what the sum {merge.name} adds besides the branches")
            new_nodes.append(add)
            current = add.outputs[0]
    graph.insert_before(merge, new_nodes)
    replace_value(block.output, current)
    graph.remove([node for chain in block.branches for node in chain] + block.merge_nodes, safe=True)


def _record(node: ir.Node, merge: ir.Node, replaced: str) -> None:
    """The new node belongs to the block whose merge it replaces, and says what it replaced."""
    take_scope(node, merge)
    describe(node, replaced)


def _stacked(
    graph: ir.Graph, column: list[ir.Node], data: ir.Value, groups: int, names: Names, *, first_conv: bool
) -> ir.Node:
    """One node doing what ``column`` (the same step of every branch) did, on stacked channels."""
    model_node = column[0]
    attributes = {name: attr.value for name, attr in model_node.attributes.items()}
    name = names.fresh(common_name([n.name or "" for n in column], f"{model_node.name}.grouped", drop_varying=True))
    inputs: list[ir.Value | None] = [data]
    if model_node.op_type == "Conv":
        weights = [known_constant(n.inputs[1]) for n in column]
        inputs.append(_stacked_initializer(graph, names, column, 1, np.concatenate(weights, axis=0)))
        biases = [_bias(n) for n in column]
        if any(b is not None for b in biases):
            filled = [b if b is not None else np.zeros(w.shape[0], w.dtype) for b, w in zip(biases, weights)]
            inputs.append(_stacked_initializer(graph, names, column, 2, np.concatenate(filled)))
        if not first_conv:
            attributes["group"] = groups * model_node.attributes.get_int("group", 1)
    elif model_node.op_type == "BatchNormalization":
        for index in range(1, 5):
            parts = [known_constant(n.inputs[index]) for n in column]
            inputs.append(_stacked_initializer(graph, names, column, index, np.concatenate(parts)))
    else:
        inputs.extend(model_node.inputs[1:])  # equal constants in every branch: share the first's
    node = ir.node(model_node.op_type, inputs, attributes, name=name, metadata_props=_provenance(column, groups))
    _name_output(node, column[0].outputs[0], names, channels=groups)
    return node


def _summed_conv(graph: ir.Graph, tails: list[list[ir.Node]], data: ir.Value, names: Names) -> ir.Node:
    """The branches' last Conv [+ BatchNorm] over the stacked channels, summed: one Conv."""
    weights, biases = [], []
    for tail in tails:
        weight = known_constant(tail[0].inputs[1]).astype(np.float64)
        bias = _bias(tail[0])
        bias = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
        if len(tail) == 2:  # this branch's own BatchNorm: fold it in before summing
            scale_shift = batchnorm_scale_shift(tail[1])
            if scale_shift is None:
                raise ValueError("a stacked BatchNorm lost its constant parameters")
            scale, shift = scale_shift
            weight, bias = weight * scale[:, None, None, None], bias * scale + shift
        weights.append(weight)
        biases.append(bias)
    convs = [tail[0] for tail in tails]
    dtype = known_constant(convs[0].inputs[1]).dtype
    has_bias = len(tails[0]) == 2 or any(_bias(conv) is not None for conv in convs)
    inputs = [data, _stacked_initializer(graph, names, convs, 1, np.concatenate(weights, axis=1), dtype)]
    if has_bias:
        inputs.append(_stacked_initializer(graph, names, convs, 2, np.sum(biases, axis=0), dtype))
    attributes = {name: attr.value for name, attr in convs[0].attributes.items()}
    name = names.fresh(common_name([c.name or "" for c in convs], f"{convs[0].name}.grouped", drop_varying=True))
    provenance = _provenance(convs, len(tails), extra=[tail[1] for tail in tails if len(tail) == 2])
    node = ir.node("Conv", inputs, attributes, name=name, metadata_props=provenance)
    _name_output(node, tails[0][-1].outputs[0], names, channels=1)
    return node


def _bias(conv: ir.Node) -> np.ndarray | None:
    return constant(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None


def _stacked_initializer(
    graph: ir.Graph, names: Names, column: list[ir.Node], index: int, array: np.ndarray, dtype: np.dtype | None = None
) -> ir.Value:
    originals = [v.name or "" for n in column if len(n.inputs) > index and (v := n.inputs[index]) is not None]
    suffix = {1: "weight", 2: "bias"}.get(index, f"input{index}") if column[0].op_type == "Conv" else ""
    fallback = f"{column[0].name}.{suffix or index}"
    name = common_name(originals, fallback, drop_varying=True) if originals else fallback
    return add_initializer(graph, names, name, array, dtype or array.dtype)


def _provenance(column: list[ir.Node], groups: int, extra: list[ir.Node] | None = None) -> dict[str, str]:
    """Branch count and, where BatchNorm was folded before, the reference parameter count."""
    props = {GROUPED_FROM: str(groups)}
    if any(REFERENCE_PARAMS in n.metadata_props for n in column) or extra:
        total = sum(_reference_params(n) for n in column)
        total += sum(known_constant(bn.inputs[1]).size + known_constant(bn.inputs[2]).size for bn in extra or [])
        props[REFERENCE_PARAMS] = str(total)
    return props


def _reference_params(conv: ir.Node) -> int:
    if REFERENCE_PARAMS in conv.metadata_props:
        return int(conv.metadata_props[REFERENCE_PARAMS])
    bias = _bias(conv)
    return known_constant(conv.inputs[1]).size + (bias.size if bias is not None else 0)


def _name_output(node: ir.Node, like: ir.Value, names: Names, channels: int = 1) -> None:
    """Name the node's output and give it ``like``'s type, with the channel count multiplied."""
    out = node.outputs[0]
    out.name = names.fresh(f"v_{node.name}")
    out.type = like.type
    if like.shape is not None:
        dims = list(like.shape)
        if channels != 1 and len(dims) > 1 and isinstance(dims[1], int):
            dims[1] *= channels
        out.shape = ir.Shape(dims)
