"""Outline each block of a flat graph as an ONNX local function (``graphgen build --functions``).

Rewrite rule: the nodes a block emitted (a bottleneck, an Inception module, an MBConv…) become
one call node, named by the block's path (``layer3.1``), of a function named after its class
(``Bottleneck``) in the ``graphgen.blocks`` domain::

    n1(x, W1) -> a; n2(a, W2) -> b; n3(b, x) -> y   ->   Bottleneck(x, W1, W2) -> y

with the function's body the nodes themselves. Its inputs are what the block reads from outside:
activations and its weights (a function cannot see the graph's initializers, so weights are
passed in and stay graph initializers). Scalars and integer tensors it reads (Clip bounds,
shapes, axes) are copied into the body as Constant nodes instead. Its outputs are the values
read outside the block. Blocks of identical structure — same ops, attributes, wiring and
shapes — share one definition. Every definition has a name of its own and no overload: the
class name where the class has one structure, else the class name and its first call site
(``Bottleneck_layer3_0`` is the projecting first block of stage 3, ``Bottleneck_layer3_1`` the
body its other blocks share). Tools that key functions by name alone (onnxslim) then keep them
apart, and Netron labels every call with its block's kind: the graph reads as a chain of
blocks that open on click.

Which nodes form a block comes from the module tree, which onnxscript's builder records on every
node (``pkg.onnxscript.class_hierarchy`` and ``pkg.onnxscript.name_scopes``): a node belongs
to the outermost module on its path that is neither the root, a container (Sequential,
ModuleList) nor a primitive layer of :mod:`graphgen.nn`. Blocks of a single node stay as they
are, and so does a block whose nodes are not contiguous in the data flow (outlining it would
make a cycle). Nothing changes numerically: onnxruntime inlines the calls when it loads the model, and
:func:`graphgen.passes.inline.inline_functions` restores the flat graph with its names.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx_ir as ir

from graphgen.metadata import BLOCKS_DOMAIN
from graphgen.passes.base import GraphPass, PassResult
from graphgen.passes.names import Names
from graphgen.scopes import (
    CLASS_HIERARCHY,
    NAME_SCOPES,
    NAMESPACE,
    BlockScope,
    block_scopes,
    describe_node,
    local_metadata,
    relative_name,
)

BLOCKS_VERSION = 1


def _embeddable(value: ir.Value) -> bool:
    """A constant copied into a function body: a scalar or an integer tensor, never a weight."""
    tensor = value.const_value if value.is_initializer() else None
    if tensor is None:
        return False
    return tensor.shape.rank() == 0 or not tensor.dtype.is_floating_point()


def _tensor_of(value: ir.Value) -> ir.TensorProtocol:
    if value.const_value is None:
        raise ValueError(f"{value.name!r} was taken for a constant but holds no tensor")
    return value.const_value


def _tensor_key(tensor: ir.TensorProtocol) -> tuple:
    array = tensor.numpy()
    return (tensor.dtype, array.shape, array.tobytes())


def _attribute_key(attr: ir.Attr) -> tuple | None:
    """A hashable form of an attribute's value; None for a subgraph (such blocks are left alone)."""
    if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
        return None
    if attr.type == ir.AttributeType.TENSOR:
        return (attr.name, _tensor_key(attr.value))
    if attr.type == ir.AttributeType.TENSORS:
        return (attr.name, tuple(_tensor_key(t) for t in attr.value))
    value = attr.value
    return (attr.name, attr.type, tuple(value) if isinstance(value, list | tuple) else value)


def _type_key(value: ir.Value) -> tuple:
    shape = tuple(str(dim) for dim in value.shape) if value.shape is not None else None
    return (str(value.type), shape)


@dataclass
class Block:
    """One block's nodes and the boundary that outlining gives it."""

    scope: BlockScope
    nodes: list[ir.Node]
    inputs: list[ir.Value] = field(default_factory=list)  # read from outside, in first-use order
    constants: list[ir.Value] = field(default_factory=list)  # embedded in the body
    outputs: list[ir.Value] = field(default_factory=list)  # read outside
    structure: tuple | None = None  # equal for blocks that can share one function

    def analyse(self, graph: ir.Graph, position: dict[int, int]) -> bool:
        """Find the boundary and structure; False if the block cannot be outlined.

        ``position`` maps id(node) to its index in the graph's (topological) order.
        """
        members = {id(node) for node in self.nodes}
        local: dict[int, tuple] = {}  # id(value) -> its reference inside the block
        for index, node in enumerate(self.nodes):
            for output_index, output in enumerate(node.outputs):
                local[id(output)] = ("node", index, output_index)
        node_keys = []
        for node in self.nodes:
            references: list[tuple | None] = []
            for value in node.inputs:
                if value is None:
                    references.append(None)  # an omitted optional input
                    continue
                if id(value) not in local:
                    if _embeddable(value):
                        local[id(value)] = ("constant", len(self.constants), _tensor_key(_tensor_of(value)))
                        self.constants.append(value)
                    else:
                        local[id(value)] = ("input", len(self.inputs))
                        self.inputs.append(value)
                references.append(local[id(value)])
            attributes = [_attribute_key(attr) for attr in node.attributes.values()]
            if None in attributes:
                return False
            outputs = tuple(_type_key(value) for value in node.outputs)
            node_keys.append((node.domain, node.op_type, node.overload, tuple(attributes), tuple(references), outputs))
        graph_outputs = {id(value) for value in graph.outputs}
        self.outputs = [
            value
            for node in self.nodes
            for value in node.outputs
            if id(value) in graph_outputs or any(id(user) not in members for user, _ in value.uses())
        ]
        if not self.outputs or not self._contiguous(position, members):
            return False
        self.structure = (
            self.scope.class_name,
            tuple(_type_key(value) for value in self.inputs),
            tuple(node_keys),
            tuple(local[id(value)] for value in self.outputs),
        )
        return True

    def _contiguous(self, position: dict[int, int], members: set[int]) -> bool:
        """No path leaves the block and comes back (outlining would make a cycle)."""
        first = min(position[id(node)] for node in self.nodes)
        pending = [value.producer() for value in self.inputs]
        seen: set[int] = set()
        while pending:
            producer = pending.pop()
            if producer is None or id(producer) in seen or position.get(id(producer), -1) < first:
                continue
            if id(producer) in members:
                return False
            seen.add(id(producer))
            pending.extend(value.producer() for value in producer.inputs if value is not None)
        return True


def _function(block: Block, name: str, opsets: dict[str, int]) -> ir.Function:
    """The body of ``block`` as a function, its values renamed relative to the block."""
    path, value_names, node_names = block.scope.path, Names(), Names()  # values and nodes apart
    mapping: dict[int, ir.Value] = {}
    activations = [value for value in block.inputs if not value.is_initializer()]
    inputs = []
    for value in block.inputs:
        if value.is_initializer():
            local_name = relative_name(value.name, path)
        else:  # x, or x0, x1… for a block reading several activations (a concatenation)
            local_name = "x" if len(activations) == 1 else f"x{activations.index(value)}"
        # Initializers, like every value graphgen writes, are named; "weight" only keeps the types honest.
        inputs.append(ir.Value(name=value_names.fresh(local_name or "weight"), shape=value.shape, type=value.type))
        mapping[id(value)] = inputs[-1]
    body = []
    for value in block.constants:
        tensor = ir.Tensor(_tensor_of(value).numpy(), name=value_names.fresh(value.name or "constant"))
        constant = ir.Node(
            "",
            "Constant",
            [],
            attributes=[ir.AttrTensor("value", tensor)],
            name=node_names.fresh(tensor.name or "constant"),
        )
        constant.outputs[0].name, constant.outputs[0].shape = tensor.name, ir.Shape(tensor.shape)
        constant.outputs[0].type = ir.TensorType(tensor.dtype)
        mapping[id(value)] = constant.outputs[0]
        body.append(constant)
    for node in block.nodes:
        copy = ir.Node(
            node.domain,
            node.op_type,
            [mapping[id(v)] if v is not None else None for v in node.inputs],
            attributes=list(node.attributes.values()),
            overload=node.overload,
            num_outputs=len(node.outputs),
            version=node.version,
            name=node_names.fresh(relative_name(node.name, path) or node.op_type),
            metadata_props=local_metadata(node, block.scope),
        )
        copy.doc_string = describe_node(copy) or node.doc_string  # relative to the block, as the metadata
        for old, new in zip(node.outputs, copy.outputs):
            new.name, new.shape, new.type = (
                value_names.fresh(relative_name(old.name, path) or "value"),
                old.shape,
                old.type,
            )
            mapping[id(old)] = new
        body.append(copy)
    outputs = [mapping[id(v)] for v in block.outputs]
    for index, value in enumerate(outputs):  # y, or y0, y1… : what the block hands on, as x is what it takes
        value.name = value_names.fresh("y" if len(outputs) == 1 else f"y{index}")
    graph = ir.Graph(inputs, outputs, nodes=body, opset_imports=opsets, name=name)
    return ir.Function(BLOCKS_DOMAIN, name, "", graph=graph, attributes=[])


def _call(block: Block, function: ir.Function, graph: ir.Graph) -> ir.Node:
    """Replace the block's nodes by one call of ``function``."""
    scope, members = block.scope, {id(node) for node in block.nodes}
    ops = Counter(node.op_type for node in block.nodes)
    summary = ", ".join(f"{op}×{n}" if n > 1 else op for op, n in ops.items())
    call = ir.Node(
        BLOCKS_DOMAIN,
        function.name,
        block.inputs,
        num_outputs=len(block.outputs),
        name=scope.path,
        doc_string=f"{scope.class_name} {scope.path}: {summary}",
        metadata_props={
            NAMESPACE: scope.namespace,
            CLASS_HIERARCHY: str(list(scope.classes)),
            NAME_SCOPES: str(list(scope.scopes)),
        },
    )
    graph.insert_after(block.nodes[-1], call)
    for old, new in zip(block.outputs, call.outputs):
        for user, index in list(old.uses()):
            if id(user) not in members:
                user.replace_input_with(index, new)
        for index, output in enumerate(graph.outputs):
            if output is old:
                graph.outputs[index] = new
    graph.remove(block.nodes, safe=True)
    for old, new in zip(block.outputs, call.outputs):
        new.name, new.shape, new.type = old.name, old.shape, old.type
    return call


def blocks_of(graph: ir.Graph) -> list[Block]:
    """The graph's blocks in order of first appearance, unanalysed.

    A node's block is the outermost candidate of :func:`block_scopes`, except that a module
    whose nodes all lie in two or more blocks of one class is a stage written as a plain module
    (WRN's ``Group``), so its nodes go to those blocks instead.
    """
    candidates = {id(node): block_scopes(node) for node in graph}
    depth = dict.fromkeys(candidates, 0)  # id(node) -> index of its block among its candidates
    while True:
        members: dict[str, list[ir.Node]] = {}
        for node in graph:
            if depth[id(node)] < len(candidates[id(node)]):
                members.setdefault(candidates[id(node)][depth[id(node)]].path, []).append(node)
        stages = [nodes for nodes in members.values() if _is_stage(nodes, candidates, depth)]
        if not stages:
            break
        for nodes in stages:
            for node in nodes:
                depth[id(node)] += 1
    scope_of = {
        id(node): candidates[id(node)][depth[id(node)]] for node in graph if depth[id(node)] < len(candidates[id(node)])
    }
    # A node a pass made without module metadata joins the block its name places it in
    # (fold_repvgg's ``stages.1.0.reparam_conv`` belongs to block ``stages.1.0``).
    by_path = {scope.path: scope for scope in scope_of.values()}
    for node in graph:
        if not candidates[id(node)] and node.name and CLASS_HIERARCHY not in node.metadata_props:
            parts = node.name.split(".")
            prefixes = (".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1))
            scope = next((by_path[prefix] for prefix in prefixes if prefix in by_path), None)
            if scope is not None:
                scope_of[id(node)] = scope
    blocks: dict[str, Block] = {}
    for node in graph:
        if id(node) in scope_of:
            blocks.setdefault(scope_of[id(node)].path, Block(scope_of[id(node)], [])).nodes.append(node)
    return list(blocks.values())


def _is_stage(nodes: list[ir.Node], candidates: dict[int, list[BlockScope]], depth: dict[int, int]) -> bool:
    inner = [candidates[id(node)][depth[id(node)] + 1 : depth[id(node)] + 2] for node in nodes]
    if not all(inner):
        return False  # the module emits nodes of its own or through its layers: a block
    return len({scope[0].class_name for scope in inner}) == 1 and len({scope[0].path for scope in inner}) > 1


class OutlineBlocksPass(GraphPass):
    """Every block a call of a uniquely named local function (the rule in the module doc)."""

    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        graph = model.graph
        position = {id(node): index for index, node in enumerate(graph)}
        blocks = [block for block in blocks_of(graph) if len(block.nodes) > 1 and block.analyse(graph, position)]
        structures: dict[tuple, list[Block]] = {}
        for block in blocks:
            if block.structure is not None:  # analysed: every block kept above
                structures.setdefault(block.structure, []).append(block)
        per_class = Counter(structure[0] for structure in structures)
        opsets = {domain: version for domain, version in graph.opset_imports.items() if domain != BLOCKS_DOMAIN}
        function_of: dict[str, ir.Function] = {}  # block path -> its function
        function_names = Names()
        for instances in structures.values():  # every body is copied before any block is replaced
            first = instances[0]
            name = first.scope.class_name
            if per_class[name] > 1:  # several bodies of one class: each named after its first call site
                name = f"{name}_{first.scope.path.replace('.', '_')}"
            function = _function(first, function_names.fresh(name), opsets)
            function.doc_string = f"{first.scope.class_name}, called as {', '.join(b.scope.path for b in instances)}"
            model.functions[function.identifier()] = function
            function_of.update((block.scope.path, function) for block in instances)
        replaced: dict[int, ir.Value] = {}  # id(block output) -> the call output that replaced it
        for block in blocks:
            block.inputs = [replaced.get(id(value), value) for value in block.inputs]
            call = _call(block, function_of[block.scope.path], graph)
            replaced.update((id(old), new) for old, new in zip(block.outputs, call.outputs))
        if blocks:
            graph.opset_imports[BLOCKS_DOMAIN] = BLOCKS_VERSION
            model.opset_imports[BLOCKS_DOMAIN] = BLOCKS_VERSION
            graph.sort()
        return len(blocks)


def outline_blocks(model: ir.Model) -> PassResult:
    """Return a copy of ``model`` with every block a call of a local function (see the module doc)."""
    return OutlineBlocksPass()(model)


__all__ = ["BLOCKS_DOMAIN", "Block", "OutlineBlocksPass", "blocks_of", "outline_blocks"]
