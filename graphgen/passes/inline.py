"""Inline the local functions of a model: the inverse of :func:`graphgen.passes.outline.outline_blocks`.

Rewrite rule: every call of a model-local function is replaced by the function's body, until
no call and no function is left::

    Bottleneck(x, W1, W2) -> y   ->   n1(x, W1) -> a; n2(a, W2) -> b; n3(b, x) -> y

Statistics and the other passes read flat graphs, and some runtimes (OpenVINO) refuse
model-local functions altogether (``graphgen convert --inline``). Calls of graphgen's blocks get
back the node names (``layer3.1.conv2``), value names and module metadata they had before
outlining, so a table of an outlined model reads like the flat one; any other function (a
``torch.onnx.export`` one, say) is inlined by onnx_ir's inliner.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import InlinePass

from graphgen.metadata import BLOCKS_DOMAIN
from graphgen.passes.base import GraphPass, PassResult
from graphgen.scopes import describe_node, global_metadata


class InlineFunctionsPass(GraphPass):
    """Every call of a local function replaced by its body (the rule in the module doc)."""

    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        if not model.functions:
            return 0
        graph = model.graph
        calls = 0
        for call in [node for node in graph if node.domain == BLOCKS_DOMAIN]:
            function = model.functions.get(call.op_identifier())
            if function is not None:
                _inline_call(graph, call, function)
                calls += 1
        for identifier in [key for key in model.functions if key[0] == BLOCKS_DOMAIN]:
            del model.functions[identifier]
        graph.opset_imports.pop(BLOCKS_DOMAIN, None)
        model.opset_imports.pop(BLOCKS_DOMAIN, None)
        if model.functions:  # anyone else's functions, nested ones included
            calls += sum(node.op_identifier() in model.functions for node in graph)
            domains = {domain for domain, _, _ in model.functions}
            InlinePass()(model)
            model.functions.clear()  # those never called
            for domain in domains - {node.domain for node in graph}:
                graph.opset_imports.pop(domain, None)
                model.opset_imports.pop(domain, None)
        return calls


def inline_functions(model: ir.Model) -> PassResult:
    """Return a flat copy of ``model``: no local function, no call (``rewrites``: the calls inlined)."""
    return InlineFunctionsPass()(model)


def _inline_call(graph: ir.Graph, call: ir.Node, function: ir.Function) -> None:
    path = call.name
    mapping: dict[int, ir.Value | None] = {id(param): arg for param, arg in zip(function.inputs, call.inputs)}
    nodes = []
    for inner in function:
        if inner.op_type == "Constant" and inner.domain == "" and not inner.inputs:
            # an embedded constant becomes the shared initializer it was copied from
            tensor, name = inner.attributes["value"].value, inner.outputs[0].name
            if name is None:
                raise ValueError(f"constant {inner.name!r} of block {path!r} has no output name")
            if name not in graph.initializers:
                graph.register_initializer(
                    ir.Value(
                        name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype), const_value=tensor
                    )
                )
            mapping[id(inner.outputs[0])] = graph.initializers[name]
            continue
        node = ir.Node(
            inner.domain,
            inner.op_type,
            [mapping[id(v)] if v is not None else None for v in inner.inputs],
            attributes=list(inner.attributes.values()),
            overload=inner.overload,
            num_outputs=len(inner.outputs),
            version=inner.version,
            name=f"{path}.{inner.name}",
            metadata_props=global_metadata(inner, call),
        )
        node.doc_string = describe_node(node) or inner.doc_string
        for old, new in zip(inner.outputs, node.outputs):
            new.name, new.shape, new.type = f"v_{path}.{old.name}", old.shape, old.type
            mapping[id(old)] = new
        nodes.append(node)
    graph.insert_before(call, nodes)
    for parameter, output in zip(function.outputs, call.outputs):
        replacement = mapping[id(parameter)]
        if replacement is None:
            raise ValueError(f"output {parameter.name!r} of block {path!r} is an omitted input")
        for user, index in list(output.uses()):
            user.replace_input_with(index, replacement)
        for index, graph_output in enumerate(graph.outputs):
            if graph_output is output:
                graph.outputs[index] = replacement
        replacement.name, replacement.shape, replacement.type = output.name, output.shape, output.type
    graph.remove(call, safe=True)
