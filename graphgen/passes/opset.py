"""Write a model at another opset of the default ONNX domain (``--opset N``, N from 13 to 21).

Rewrite rule: the model, its graph and every function import opset N instead of their own;
every default-domain node is checked against its operator's schema at N — the operator exists,
every attribute it carries is defined there, its number of inputs and outputs fits, and its
input types are allowed — so the result is valid at N (onnx's checker, full_check) and computes
what the input computed. Where an operator's signature changed between two opsets and the
change is mechanical, the node is adapted:

    ReduceMean(x, axes=const)  <->  ReduceMean(x, axes=[...])   (reductions: axes an input from 18)
    Split(x, num_outputs=n)     ->  Split(x, split=[...])         (num_outputs appears at 18)

Anything else that does not fit is refused with the node and the reason, never written wrong.
Node names, descriptions, metadata and value shapes are kept: the nodes are the same objects.

Why not a library converter: onnx's version converter has no adapter from Relu-14 or Mul-14
down to 13 and drops node metadata and shapes; onnxscript's converts upwards only. The ops a
CNN uses changed between 13 and 21 mostly by admitting more types, which the check covers.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import defs

from graphgen.errors import GraphgenError
from graphgen.passes.base import GraphPass, PassResult, constant
from graphgen.passes.names import Names

MIN_OPSET, MAX_OPSET = 13, 21
DEFAULT_DOMAINS = ("", "ai.onnx")
# Reductions whose axes moved from an attribute to the second input at opset 18 (ReduceSum: at 13).
AXES_INPUT_SINCE = {
    op: 18
    for op in (
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSumSquare",
    )
} | {"ReduceSum": 13}
SPLIT_NUM_OUTPUTS_SINCE = 18


class OpsetError(GraphgenError, ValueError):
    """A node cannot be written at the requested opset."""


class ConvertOpsetPass(GraphPass):
    """The model at opset ``target`` of the default domain (the rule in the module doc)."""

    def __init__(self, target: int) -> None:
        super().__init__()
        if not MIN_OPSET <= target <= MAX_OPSET:
            raise OpsetError(f"--opset must be from {MIN_OPSET} to {MAX_OPSET}, got {target}")
        self.target = target

    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        source = _default_opset(model.opset_imports)
        if source is None:
            return 0  # nothing of the default domain: nothing to convert
        names = Names(model.graph)
        scopes: list[tuple[ir.Graph | ir.Function, int]] = [(model.graph, source)]
        scopes += [
            (function, _default_opset(function.opset_imports) or source) for function in model.functions.values()
        ]
        changed = 0
        for scope, version in scopes:
            if version == self.target:
                continue
            for node in ir.traversal.RecursiveGraphIterator(scope):
                if node.domain in DEFAULT_DOMAINS:
                    _convert_node(model.graph, node, node.version or version, self.target, names)
                    node.version = None  # it follows the opset import from now on
                    changed += 1
        for imports in [
            model.opset_imports,
            model.graph.opset_imports,
            *(f.opset_imports for f in model.functions.values()),
        ]:
            for domain in DEFAULT_DOMAINS:
                if domain in imports:
                    imports[domain] = self.target
        return changed


def convert_opset(model: ir.Model, target: int) -> PassResult:
    """Return a copy of ``model`` at opset ``target``; ``rewrites``: the nodes now checked at it."""
    return ConvertOpsetPass(target)(model)


def _default_opset(imports: dict[str, int]) -> int | None:
    return next((imports[domain] for domain in DEFAULT_DOMAINS if domain in imports), None)


def _convert_node(graph: ir.Graph, node: ir.Node, source: int, target: int, names: Names) -> None:
    try:
        schema = defs.get_schema(node.op_type, target, "")
    except defs.SchemaError:
        raise OpsetError(_where(node, f"{node.op_type} does not exist at opset {target}")) from None
    if node.op_type in AXES_INPUT_SINCE:
        _move_axes(graph, node, AXES_INPUT_SINCE[node.op_type], source, target, names)
    if node.op_type == "Split" and target < SPLIT_NUM_OUTPUTS_SINCE and "num_outputs" in node.attributes:
        _split_sizes(graph, node, names)
    _check(node, schema, target)


def _check(node: ir.Node, schema: defs.OpSchema, target: int) -> None:
    unknown = sorted(set(node.attributes) - set(schema.attributes))
    if unknown:
        raise OpsetError(_where(node, f"attribute {unknown[0]!r} of {node.op_type} is not defined at opset {target}"))
    inputs = list(node.inputs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    if not schema.min_input <= len(inputs) <= schema.max_input:
        raise OpsetError(
            _where(
                node,
                f"{node.op_type} takes {schema.min_input}..{schema.max_input} inputs at opset {target}, "
                f"this one has {len(inputs)}",
            )
        )
    if not schema.min_output <= len(node.outputs) <= schema.max_output:
        raise OpsetError(
            _where(
                node, f"{node.op_type} has {len(node.outputs)} outputs, at most {schema.max_output} at opset {target}"
            )
        )
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    for index, value in enumerate(inputs):
        if value is None or value.dtype is None or not schema.inputs:
            continue
        formal = schema.inputs[min(index, len(schema.inputs) - 1)]
        type_str = f"tensor({onnx.TensorProto.DataType.Name(int(value.dtype)).lower()})"
        if type_str not in allowed.get(formal.type_str, {formal.type_str}):
            raise OpsetError(_where(node, f"{node.op_type} does not take {type_str} at opset {target}"))


def _move_axes(graph: ir.Graph, node: ir.Node, since: int, source: int, target: int, names: Names) -> None:
    """Axes as an attribute below ``since``, as the second input from it on."""
    if source >= since > target and len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = constant(node.inputs[1])
        if axes is None:
            raise OpsetError(_where(node, f"computed axes cannot become an attribute below opset {since}"))
        node.attributes["axes"] = ir.AttrInt64s("axes", [int(a) for a in axes])
        node.replace_input_with(1, None)
        node.resize_inputs(1)
    elif source < since <= target and "axes" in node.attributes:
        axes = np.array(node.attributes.pop("axes").as_ints(), np.int64)
        value = ir.Value(name=names.fresh(f"{node.name or node.op_type}.axes"), const_value=ir.Tensor(axes))
        value.shape, value.type = ir.Shape(axes.shape), ir.TensorType(ir.DataType.INT64)
        graph.register_initializer(value)
        node.resize_inputs(2)
        node.replace_input_with(1, value)


def _split_sizes(graph: ir.Graph, node: ir.Node, names: Names) -> None:
    """``num_outputs=n`` becomes the sizes it means (ceil(d/n) each, the rest last), from a static shape."""
    count = node.attributes.pop("num_outputs").as_int()
    axis = node.attributes["axis"].as_int() if "axis" in node.attributes else 0
    shape = node.inputs[0].shape if node.inputs[0] is not None else None
    size = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
    if not isinstance(size, int):
        raise OpsetError(_where(node, "Split by num_outputs needs a static size along its axis below opset 18"))
    chunk = -(-size // count)
    sizes = np.array([chunk] * (count - 1) + [size - chunk * (count - 1)], np.int64)
    value = ir.Value(name=names.fresh(f"{node.name or 'split'}.split"), const_value=ir.Tensor(sizes))
    value.shape, value.type = ir.Shape(sizes.shape), ir.TensorType(ir.DataType.INT64)
    graph.register_initializer(value)
    node.resize_inputs(2)
    node.replace_input_with(1, value)


def _where(node: ir.Node, problem: str) -> str:
    return f"node {node.name or '(unnamed)'}: {problem}"
