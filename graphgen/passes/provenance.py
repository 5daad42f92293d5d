"""What a pass writes on the nodes it makes or changes: their module, their block, what they replaced.

graphgen promises that every node names its module and block in its description (Netron shows
it). A pass-made node takes the module-tree metadata of the node that stands for the block it
rewrote (a RepVGG block's sum, a ResNeXt block's merge), so it describes itself, and is outlined
by ``--functions``, as part of that block; :data:`~graphgen.metadata.REPLACED` adds what it
replaced, in words. Graphs without module metadata (torch exports) still get a description:
the node's op, its name and what it replaced.
"""

from __future__ import annotations

import onnx_ir as ir

from graphgen.metadata import REPLACED
from graphgen.onnxscript_api import CLASS_HIERARCHY, NAME_SCOPES, NAMESPACE
from graphgen.scopes import describe_node

SCOPE_KEYS = (CLASS_HIERARCHY, NAME_SCOPES, NAMESPACE)


def take_scope(node: ir.Node, source: ir.Node) -> None:
    """Place ``node`` in the module tree where ``source`` is (its module and block)."""
    node.metadata_props.update({key: source.metadata_props[key] for key in SCOPE_KEYS if key in source.metadata_props})


def in_module_tree(node: ir.Node) -> bool:
    """Whether ``node`` carries the module-tree metadata its description is made from."""
    return CLASS_HIERARCHY in node.metadata_props


def describe(node: ir.Node, replaced: str | None = None) -> None:
    """Add ``replaced`` (what the node now stands for) to its record, and describe the node anew."""
    if replaced:
        earlier = node.metadata_props.get(REPLACED)
        node.metadata_props[REPLACED] = f"{earlier}; {replaced}" if earlier else replaced
    words = node.metadata_props.get(REPLACED)
    fallback = f"{node.op_type} {node.name or ''}".rstrip() + (f" ({words})" if words else "")
    node.doc_string = describe_node(node) or fallback


def span(names: list[str]) -> str:
    """A list of node names in words: all of them when few, else the first and last."""
    names = [name for name in names if name]
    if len(names) <= 6:
        return ", ".join(names)
    return f"{names[0]} … {names[-1]}"
