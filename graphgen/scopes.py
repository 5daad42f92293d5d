"""What the module tree, recorded on every node, says about it: its module, its block, a description.

onnxscript's builder records on every node the classes and attribute names of the modules that
emitted it (``pkg.onnxscript.class_hierarchy`` ``['ResNet', 'Sequential', 'Bottleneck', 'Conv2d']``
and ``pkg.onnxscript.name_scopes`` ``['', 'layer3', '1', 'conv2']``). From these come a node's
block (what ``--functions`` outlines), the description Netron shows for it, and the metadata a
function body carries relative to its block (and back, when it is inlined).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import onnx_ir as ir

from graphgen import nn
from graphgen.metadata import FOLDED_FROM, REPLACED
from graphgen.onnxscript_api import CLASS_HIERARCHY, NAME_SCOPES, NAMESPACE

PATH_VALUED = (FOLDED_FROM,)  # node metadata naming a module: relative to the block inside a function
CONTAINERS = frozenset({"Sequential", "ModuleList"})
PRIMITIVES = frozenset(
    name
    for name, obj in vars(nn).items()
    if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == nn.__name__
)


@dataclass(frozen=True)
class BlockScope:
    """Where a node sits in the module tree, cut at its block."""

    path: str  # "layer3.1"
    class_name: str  # "Bottleneck"
    classes: tuple[str, ...]  # root … block
    scopes: tuple[str, ...]  # "" … "1"

    @property
    def namespace(self) -> str:
        """The same form onnxscript writes for nodes: ``: ResNet/layer3: Sequential/1: Bottleneck``."""
        return "/".join(f"{scope}: {cls}" for scope, cls in zip(self.scopes, self.classes))


def block_scopes(node: ir.Node) -> list[BlockScope]:
    """The modules on ``node``'s path that may be its block, outermost first.

    These are the modules that are neither the root, a container nor a primitive layer; empty
    for a node of the root, its containers and its layers, or one without module metadata.
    """
    hierarchy, scopes = node.metadata_props.get(CLASS_HIERARCHY), node.metadata_props.get(NAME_SCOPES)
    if not hierarchy or not scopes:
        return []
    try:
        classes, names = ast.literal_eval(hierarchy), ast.literal_eval(scopes)
    except (ValueError, SyntaxError):
        return []  # written by something else: leave the node where it is
    return [
        BlockScope(
            ".".join(names[1 : depth + 1]), classes[depth], tuple(classes[: depth + 1]), tuple(names[: depth + 1])
        )
        for depth in range(1, min(len(classes), len(names)))
        if classes[depth] not in CONTAINERS and classes[depth] not in PRIMITIVES
    ]


def describe_node(node: ir.Node) -> str | None:
    """What Netron shows as a node's description: the module that emitted it, and its block.

    ``Conv2d layer3.1.conv2 (BatchNorm2d layer3.1.bn2 folded in), in Bottleneck layer3.1``, or
    ``Add in Bottleneck layer3.1`` for a module's own glue op. Derived from the metadata alone, so
    a function body (whose metadata is relative to its block) describes itself relative too.
    """
    hierarchy, scopes = node.metadata_props.get(CLASS_HIERARCHY), node.metadata_props.get(NAME_SCOPES)
    try:
        classes, names = ast.literal_eval(hierarchy or "None"), ast.literal_eval(scopes or "None")
    except (ValueError, SyntaxError):
        return None
    if not classes or not names:
        return None
    path, module = ".".join(names[1:]), classes[-1]
    text = f"{module} {path}".rstrip() if module in PRIMITIVES else f"{node.op_type} in {module} {path}".rstrip()
    if FOLDED_FROM in node.metadata_props:
        text += f" (BatchNorm2d {node.metadata_props[FOLDED_FROM]} folded in)"
    if REPLACED in node.metadata_props:  # a node a pass made or changed says what it replaced
        text += f" ({node.metadata_props[REPLACED]})"
    blocks = block_scopes(node)
    if blocks and blocks[0].path != path:
        text += f", in {blocks[0].class_name} {blocks[0].path}"
    return text


def describe_nodes(graph: ir.Graph) -> None:
    """Give every node without a description the one :func:`describe_node` makes."""
    for node in graph:
        if not node.doc_string:
            node.doc_string = describe_node(node)


def relative_name(name: str | None, path: str) -> str | None:
    """``layer3.1.conv2`` -> ``conv2`` and ``v_layer3.1.Add_7`` -> ``Add_7`` inside block ``layer3.1``."""
    if name is None:
        return None
    for prefix in (f"{path}.", f"v_{path}."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def local_metadata(node: ir.Node, scope: BlockScope) -> dict[str, str]:
    """A body node's metadata with its module path relative to the block, as if the block were the root."""
    depth = len(scope.classes) - 1
    metadata = dict(node.metadata_props)
    for key in (CLASS_HIERARCHY, NAME_SCOPES):
        if key in metadata:
            names = ast.literal_eval(metadata[key])
            metadata[key] = str([scope.classes[-1] if key == CLASS_HIERARCHY else "", *names[depth + 1 :]])
    if NAMESPACE in metadata:
        metadata[NAMESPACE] = "/".join([f": {scope.class_name}", *metadata[NAMESPACE].split("/")[depth + 1 :]])
    for key in PATH_VALUED:
        if key in metadata:
            metadata[key] = relative_name(metadata[key], scope.path) or ""
    return metadata


def global_metadata(node: ir.Node, call: ir.Node) -> dict[str, str]:
    """The inverse of :func:`local_metadata` for a body node inlined at ``call``."""
    metadata = dict(node.metadata_props)
    for key in (CLASS_HIERARCHY, NAME_SCOPES):
        if key in metadata and key in call.metadata_props:
            outer, inner = ast.literal_eval(call.metadata_props[key]), ast.literal_eval(metadata[key])
            metadata[key] = str([*outer, *inner[1:]])
    if NAMESPACE in metadata and NAMESPACE in call.metadata_props:
        metadata[NAMESPACE] = "/".join([call.metadata_props[NAMESPACE], *metadata[NAMESPACE].split("/")[1:]])
    for key in PATH_VALUED:
        if key in metadata:
            metadata[key] = f"{call.name}.{metadata[key]}"
    return metadata
