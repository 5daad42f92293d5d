"""Half precision: float16 weights and compute.

Rewrite rule: every float32 tensor — initializers, ``Constant`` nodes and tensor attributes —
becomes float16 (values beyond ±65504 saturate there instead of becoming infinite), every
float32 value in the graph is typed float16, and every ``Cast`` to float32 casts to float16.
Inputs that the ONNX operator itself defines as float32 whatever the data type (``Resize``
scales) stay float32.

With ``keep_io_types`` the graph's float32 inputs and outputs stay float32: each input is
cast to float16 where it enters (``Cast`` named ``<input>.to_fp16``) and each output cast back
(``<output>.to_fp32``), so callers feed and read float32 as before.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphgen.metadata import FP16_BOUNDARY
from graphgen.passes.base import GraphPass, PassResult
from graphgen.passes.names import Names

FLOAT, HALF = ir.DataType.FLOAT, ir.DataType.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)
# (op, input index) that ONNX types as float32 whatever the data's type.
_ALWAYS_FLOAT32 = frozenset({("Resize", 2), ("Upsample", 1)})
BOUNDARY = FP16_BOUNDARY  # marks the Casts keep_io_types adds, so a second run knows them


class ToFp16Pass(GraphPass):
    """Float16 weights and compute (the rule above); ``keep_io_types`` keeps float32 inputs and outputs."""

    def __init__(self, *, keep_io_types: bool = False) -> None:
        self.keep_io_types = keep_io_types

    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        """The tensors, casts and graph inputs/outputs converted."""
        graph = model.graph  # shares type objects with the input: assign new types, never set .dtype
        pinned = _always_float32(graph)
        float_inputs = [v for v in graph.inputs if v.dtype == FLOAT and not v.is_initializer()]
        float_outputs = [v for v in graph.outputs if v.dtype == FLOAT]
        converted = 0
        for value in graph.initializers.values():
            if value.const_value is not None and value.const_value.dtype == FLOAT and id(value) not in pinned:
                value.const_value = ir.Tensor(_half(value.const_value.numpy()), name=value.name)
                value.type = ir.TensorType(HALF)
                converted += 1
        for node in ir.traversal.RecursiveGraphIterator(graph):
            if node.metadata_props.get(BOUNDARY) or any(id(out) in pinned for out in node.outputs):
                continue  # a Cast this pass added, or a constant that must stay float32
            converted += _convert_attributes(node)
            for out in node.outputs:
                if out.dtype == FLOAT:
                    out.type = ir.TensorType(HALF)
        if self.keep_io_types:
            return converted + _cast_at_boundaries(graph, float_inputs, float_outputs)
        for value in float_inputs:
            value.type = ir.TensorType(HALF)
        return converted + len(float_inputs) + len(float_outputs)  # outputs were retyped with their nodes


def to_fp16(model: ir.Model, *, keep_io_types: bool = False) -> PassResult:
    """Return a float16 copy of ``model``; ``rewrites`` counts the tensors, casts and graph inputs/outputs converted."""
    return ToFp16Pass(keep_io_types=keep_io_types)(model)


def _half(array: np.ndarray) -> np.ndarray:
    return np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16)


def _always_float32(graph: ir.Graph) -> set[int]:
    """Values that must stay float32 because of where they are read."""
    pinned = set()
    for node in graph:
        for op, index in _ALWAYS_FLOAT32:
            if node.op_type == op and len(node.inputs) > index and node.inputs[index] is not None:
                pinned.add(id(node.inputs[index]))
    return pinned


def _convert_attributes(node: ir.Node) -> int:
    """float32 tensors held by the node's attributes, and Cast targets; returns how many changed."""
    changed = 0
    if node.op_type == "Cast" and node.attributes.get_int("to", 0) == FLOAT:
        node.attributes["to"] = ir.AttrInt64("to", HALF)
        changed += 1
    if node.op_type == "Constant":
        for name in ("value_float", "value_floats"):  # scalar forms: make them an ordinary tensor
            if name in node.attributes:
                array = np.asarray(node.attributes.pop(name).value, dtype=np.float32)
                node.attributes["value"] = ir.AttrTensor("value", ir.Tensor(array))
    for name, attribute in list(node.attributes.items()):
        if attribute.type == ir.AttributeType.TENSOR and attribute.value.dtype == FLOAT:
            node.attributes[name] = ir.AttrTensor(name, ir.Tensor(_half(attribute.value.numpy())))
            changed += 1
    return changed


def _cast_at_boundaries(graph: ir.Graph, float_inputs: list[ir.Value], float_outputs: list[ir.Value]) -> int:
    """Float32 in, float32 out around a float16 graph: a Cast after each input, before each output."""
    names = Names(graph)
    added = 0
    for value in float_inputs:
        users = list(value.uses())
        if not users or all(user.metadata_props.get(BOUNDARY) for user, _ in users):
            continue  # unused, or already cast by an earlier run
        cast = ir.node(
            "Cast",
            [value],
            {"to": HALF},
            name=names.fresh(f"{value.name}.to_fp16"),
            metadata_props={BOUNDARY: "in"},
            doc_string=f"Cast of input '{value.name}' to float16: callers feed float32, the model computes in float16 "
            "(--fp16 --keep-io-types)",
        )
        half = cast.outputs[0]
        half.name, half.type, half.shape = names.fresh(f"{value.name}_fp16"), ir.TensorType(HALF), value.shape
        for user, index in users:
            user.replace_input_with(index, half)
        graph.insert_before(next(iter(graph)), cast)
        added += 1
    for value in float_outputs:
        producer = value.producer()
        if producer is not None and producer.metadata_props.get(BOUNDARY):
            continue  # already cast back by an earlier run
        # The computed value goes on in float16 under a new name; the output keeps its name.
        name = value.name
        value.name = names.fresh(f"{name}_fp16")
        cast = ir.node(
            "Cast",
            [value],
            {"to": FLOAT},
            name=names.fresh(f"{name}.to_fp32"),
            metadata_props={BOUNDARY: "out"},
            doc_string=f"Cast of output '{name}' back to float32: the model computes in float16, callers read "
            "float32 (--fp16 --keep-io-types)",
        )
        single = cast.outputs[0]
        single.name, single.type, single.shape = name, ir.TensorType(FLOAT), value.shape
        graph.append(cast)
        graph.outputs[graph.outputs.index(value)] = single
        added += 1
    return added
