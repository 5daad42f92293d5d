"""Flatten nested concatenations along one axis into one Concat.

Rewrite rule::

    Concat(a, Concat(b, c, axis=k), d, axis=k)  ->  Concat(a, b, c, d, axis=k)

where the inner Concat's result is read by the outer one alone (once) and is no graph output.
Both concatenate along the same axis (negative axes compared through the output's rank), so
the channels come out in the same order. Inception-v3's blocks concatenate their branches,
some of which are concatenations themselves (InceptionE's 3×3 pair): one Concat computes the
same with one copy less, and it is what graph simplifiers (onnxsim, onnxslim) make of it, so
graphgen's inference form is already their fixed point. The outer Concat keeps its name.
"""

from __future__ import annotations

import onnx_ir as ir

from graphgen.metadata import FLATTENED
from graphgen.passes.base import GraphPass, PassResult, only_consumer
from graphgen.passes.provenance import describe


class FlattenConcatsPass(GraphPass):
    """Every Concat read only by a Concat along the same axis merged into it (the rule above)."""

    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        graph = model.graph
        flattened = 0
        for outer in [node for node in graph if _is_concat(node)]:
            taken_before = len(_flattened(outer))
            while (inner := _nested(outer)) is not None:
                index = next(i for i, value in enumerate(outer.inputs) if value is inner.outputs[0])
                inputs = [*outer.inputs[:index], *inner.inputs, *outer.inputs[index + 1 :]]
                outer.resize_inputs(len(inputs))
                for position, value in enumerate(inputs):
                    if outer.inputs[position] is not value:
                        outer.replace_input_with(position, value)
                taken = [*_flattened(outer), inner.name or "Concat", *_flattened(inner)]
                outer.metadata_props[FLATTENED] = ", ".join(taken)
                graph.remove(inner, safe=True)
                flattened += 1
            if len(_flattened(outer)) > taken_before:
                describe(outer, f"nested Concat {', '.join(_flattened(outer)[taken_before:])} flattened in")
        if flattened:
            notes.append(f"{flattened} nested Concat(s) flattened into the Concat reading them")
        return flattened


def flatten_concats(model: ir.Model) -> PassResult:
    """Return a copy of ``model`` with nested same-axis Concats flattened into one."""
    return FlattenConcatsPass()(model)


def _flattened(concat: ir.Node) -> list[str]:
    return [name for name in concat.metadata_props.get(FLATTENED, "").split(", ") if name]


def _is_concat(node: ir.Node) -> bool:
    return node.op_type == "Concat" and node.domain == ""


def _axis(node: ir.Node) -> int | None:
    """The Concat's axis, counted from the front; None when negative and the rank is unknown."""
    axis = node.attributes.get_int("axis", 0)
    if axis >= 0:
        return axis
    shape = node.outputs[0].shape
    return axis + len(shape) if shape is not None else None


def _nested(outer: ir.Node) -> ir.Node | None:
    """An input Concat of ``outer`` that may be merged into it, if any."""
    axis = _axis(outer)
    for value in outer.inputs:
        if value is None or axis is None:
            continue
        inner = value.producer()
        if inner is None or not _is_concat(inner) or _axis(inner) != axis:
            continue
        if only_consumer(value) is outer and sum(1 for v in outer.inputs if v is value) == 1:
            return inner
    return None
