"""Everything graphgen takes from onnxscript's graph builder, its private parts included, in one place.

graphgen traces its module tree with onnxscript's ``nn.Module`` and ``GraphBuilder``. Part of
what it relies on is not onnxscript's public API and may change in any release:

- ``onnxscript._internal.builder`` (``GraphBuilder``, ``OpBuilder``): the builder itself;
- ``GraphBuilder._scope_name_parts()``: the dotted module path a node is named after;
- the node metadata the builder writes (``namespace``, ``pkg.onnxscript.class_hierarchy``,
  ``pkg.onnxscript.name_scopes``), from which blocks, descriptions and ``--functions`` come;
- ``OpBuilder``'s ``_name=`` keyword, parameter names qualified by the module path, and float
  scalars promoted to shared initializers.

No other graphgen module imports onnxscript. :func:`check_builder_api` traces a two-level module
tree and checks each of these behaviours; the test suite runs it, so an onnxscript release that
changes one fails with a message saying which, instead of as wrong names or empty tables later.
"""

from __future__ import annotations

import ast
from typing import cast

import onnx_ir as ir

try:
    from onnxscript import nn as _osnn
    from onnxscript._internal.builder import GraphBuilder, OpBuilder
except ImportError as error:  # pragma: no cover - only with an onnxscript that moved its builder
    raise ImportError(
        f"graphgen needs onnxscript's graph builder (onnxscript._internal.builder, onnxscript.nn): {error}. "
        "Install the onnxscript version pinned in graphgen's pyproject.toml."
    ) from error

Module = _osnn.Module
Sequential = _osnn.Sequential
ModuleList = _osnn.ModuleList
ParameterBase = _osnn.Parameter

# Node metadata the builder writes: the modules on the node's path, root first.
NAMESPACE = "namespace"  # ": ResNet/layer3: Sequential/1: Bottleneck/conv2: Conv2d"
CLASS_HIERARCHY = "pkg.onnxscript.class_hierarchy"  # "['ResNet', 'Sequential', 'Bottleneck', 'Conv2d']"
NAME_SCOPES = "pkg.onnxscript.name_scopes"  # "['', 'layer3', '1', 'conv2']"

__all__ = [
    "CLASS_HIERARCHY",
    "NAMESPACE",
    "NAME_SCOPES",
    "Module",
    "ModuleList",
    "OnnxscriptChangedError",
    "OpBuilder",
    "ParameterBase",
    "Sequential",
    "check_builder_api",
    "op_builder",
    "scope_parts",
]


class OnnxscriptChangedError(RuntimeError):
    """onnxscript no longer behaves as graphgen's tracing relies on."""


def op_builder(graph: ir.Graph) -> OpBuilder:
    """The op dispatcher that records nodes into ``graph`` (which must import the default domain)."""
    return GraphBuilder(graph).op


def scope_parts(op: OpBuilder) -> list[str]:
    """The attribute names of the modules being traced, root excluded: ``['layer3', '1', 'conv2']``."""
    return op.builder._scope_name_parts()


def check_builder_api() -> None:
    """Trace ``Net(features=Sequential(Block(conv)))`` and check every behaviour graphgen relies on.

    Raises :class:`OnnxscriptChangedError` naming the first behaviour that differs.
    """
    import onnxscript

    problems: list[str] = []
    probe = _Net()
    x = ir.Value(name="x", shape=ir.Shape([1, 2, 4, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 21}, name="check")
    try:
        probe(op_builder(graph), x)
    except Exception as error:  # any failure to trace is the finding itself
        raise OnnxscriptChangedError(_message(onnxscript.__version__, [f"tracing failed: {error!r}"])) from error

    nodes = {node.name: node for node in graph}
    seen_parts = cast(_Block, probe.features[0]).conv.seen_parts  # Sequential indexes as a plain Module
    if seen_parts != [["features", "0", "conv"]]:
        problems.append(f"GraphBuilder._scope_name_parts() gave {seen_parts}, expected [['features', '0', 'conv']]")
    if set(nodes) != {"conv_node", "clip_node"}:
        problems.append(f"OpBuilder's _name= keyword: nodes are named {sorted(map(str, nodes))}")
    if "features.0.conv.weight" not in graph.initializers:
        problems.append(f"parameters are not named by module path: initializers {sorted(graph.initializers)}")
    expected = {
        "conv_node": (["_Net", "Sequential", "_Block", "_Conv"], ["", "features", "0", "conv"]),
        "clip_node": (["_Net", "Sequential", "_Block"], ["", "features", "0"]),
    }
    for name, (classes, scopes) in expected.items():
        node = nodes.get(name)
        if node is None:
            continue
        for key, want in ((CLASS_HIERARCHY, classes), (NAME_SCOPES, scopes)):
            problems.extend(_metadata_problem(node, key, want))
        if not node.metadata_props.get(NAMESPACE, "").endswith(f"{scopes[-1]}: {classes[-1]}"):
            problems.append(f"metadata {NAMESPACE!r} of a node: {node.metadata_props.get(NAMESPACE)!r}")
    clip = nodes.get("clip_node")
    if clip is not None and not all(v is not None and v.const_value is not None for v in clip.inputs[1:]):
        problems.append("float scalars (Clip's bounds) are no longer promoted to constant initializers")
    if problems:
        raise OnnxscriptChangedError(_message(onnxscript.__version__, problems))


# The probe: a root, a container, a block and a layer, as in every graphgen model.
class _Conv(Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = ParameterBase([2, 2, 1, 1])
        self.seen_parts: list[list[str]] = []  # what scope_parts() said while this layer was traced

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        self.seen_parts.append(scope_parts(op))
        return op.Conv(x, self.weight, _name="conv_node")


class _Block(Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = _Conv()

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return op.Clip(self.conv(op, x), 0.0, 6.0, _name="clip_node")


class _Net(Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = Sequential(_Block())

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return self.features(op, x)


def _metadata_problem(node: ir.Node, key: str, want: list[str]) -> list[str]:
    text = node.metadata_props.get(key)
    try:
        got = ast.literal_eval(text) if text is not None else None
    except (ValueError, SyntaxError):
        got = text
    return [] if got == want else [f"metadata {key!r} of node {node.name}: {text!r}, expected {want!r}"]


def _message(version: str, problems: list[str]) -> str:
    return (
        f"onnxscript {version} changed the private graph-builder API graphgen's tracing relies on "
        "(graphgen/onnxscript_api.py; pin the onnxscript version of pyproject.toml or adapt that module):\n  "
        + "\n  ".join(problems)
    )
