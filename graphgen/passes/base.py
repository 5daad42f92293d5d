"""What every pass returns, and the small graph helpers the passes share."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import onnx_ir as ir


@dataclass(frozen=True)
class PassResult:
    """The rewritten model (a new object) and how many blocks the pass rewrote."""

    model: ir.Model
    rewrites: int


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The value's data if it is constant, else None (never to be written into: it is shared).

    Constant means an initializer, a ``Constant`` node's tensor, or either seen through
    ``Identity`` nodes: torch's TorchScript exporter shares equal initializers that way.
    """
    while value is not None:
        if value.is_initializer():
            return value.const_value.numpy() if value.const_value is not None else None
        node = value.producer()
        if node is None or node.domain != "":
            return None
        if node.op_type == "Constant":
            tensor = node.attributes.get_tensor("value", None)
            return tensor.numpy() if tensor is not None else None
        if node.op_type != "Identity":
            return None
        value = node.inputs[0]
    return None


def only_consumer(value: ir.Value) -> ir.Node | None:
    """The single node reading ``value``, if exactly one does and it is no graph output."""
    users = {id(node): node for node, _ in value.uses()}
    if len(users) != 1 or value.is_graph_output():
        return None
    return next(iter(users.values()))


def set_initializer(graph: ir.Graph, value: ir.Value, array: np.ndarray, dtype: np.dtype | type = np.float32) -> None:
    """Give an initializer new data, never touching the tensor the input model still holds."""
    value.const_value = ir.Tensor(np.ascontiguousarray(array, dtype=dtype), name=value.name)
    value.shape = ir.Shape(array.shape)
    value.type = ir.TensorType(value.const_value.dtype)
    if value.name not in graph.initializers:
        graph.register_initializer(value)


Block = TypeVar("Block")


def rewrite_blocks(
    model: ir.Model,
    find_next: Callable[[ir.Graph], Block | None],
    rewrite: Callable[[ir.Graph, Block, set[str]], None],
) -> PassResult:
    """Copy ``model``, then rewrite blocks one at a time until ``find_next`` finds none.

    The search restarts after each rewrite because a rewrite replaces values that later blocks
    may read. ``rewrite`` draws fresh names from one pool of value and node names, so they never
    clash with either; initializers nothing reads any more are dropped at the end.
    """
    model = model.clone()
    graph = model.graph
    names = value_names(graph) | node_names(graph)
    rewrites = 0
    while (block := find_next(graph)) is not None:
        rewrite(graph, block, names)
        rewrites += 1
    remove_unused_initializers(graph)
    return PassResult(model, rewrites)


def remove_unused_initializers(graph: ir.Graph) -> None:
    for name in [
        name for name, value in graph.initializers.items() if not value.uses() and not value.is_graph_output()
    ]:
        del graph.initializers[name]


def unique_initializer_name(graph: ir.Graph, name: str) -> str:
    """``name``, or ``name_1``, ``name_2``… if an initializer already has it."""
    candidate, n = name, 1
    while candidate in graph.initializers:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray, dtype: np.dtype | type = np.float32) -> ir.Value:
    """A new initializer holding ``array`` under a name no other initializer has."""
    value = ir.Value(name=unique_initializer_name(graph, name))
    set_initializer(graph, value, array, dtype)
    return value


def sum_tree(root: ir.Node) -> tuple[list[ir.Node], list[ir.Value]]:
    """The Add/Sum nodes of the sum rooted at ``root`` and the values it adds up (its leaves).

    An input produced by another Add or Sum belongs to the tree only if nothing else reads it,
    so the leaves can be recombined freely without changing any other result.
    """
    nodes, leaves, pending = {id(root): root}, [], list(root.inputs)
    while pending:
        value = pending.pop(0)
        producer = value.producer() if value is not None else None
        if producer is not None and is_sum(producer) and only_consumer(value) is not None:
            nodes[id(producer)] = producer
            pending.extend(producer.inputs)
        else:
            leaves.append(value)  # a value added twice (y + y) is a leaf twice, as the sum needs
    return list(nodes.values()), leaves


def is_sum(node: ir.Node) -> bool:
    return node.domain == "" and (node.op_type == "Sum" or (node.op_type == "Add" and len(node.inputs) == 2))


def sum_root(node: ir.Node) -> ir.Node:
    """The outermost Add/Sum of the sum that ``node`` belongs to (see :func:`sum_tree`)."""
    while True:
        consumer = only_consumer(node.outputs[0])
        if consumer is None or not is_sum(consumer):
            return node
        node = consumer


def conv_geometry(conv: ir.Node) -> dict[str, tuple[int, ...] | int] | None:
    """A 2-D Conv's kernel, strides, pads, dilations and group with ONNX defaults filled in.

    None when it is not a 2-D convolution with a constant weight and explicit padding
    (automatic SAME padding depends on the input size).
    """
    weight = constant(conv.inputs[1]) if len(conv.inputs) > 1 else None
    auto_pad = conv.attributes.get_string("auto_pad", "NOTSET")
    if weight is None or weight.ndim != 4 or auto_pad not in ("NOTSET", "VALID"):
        return None
    return {
        "kernel": tuple(conv.attributes.get_ints("kernel_shape", weight.shape[2:])),
        "strides": tuple(conv.attributes.get_ints("strides", (1, 1))),
        "pads": (0, 0, 0, 0) if auto_pad == "VALID" else tuple(conv.attributes.get_ints("pads", (0, 0, 0, 0))),
        "dilations": tuple(conv.attributes.get_ints("dilations", (1, 1))),
        "group": conv.attributes.get_int("group", 1),
    }


def inference_batchnorm(node: ir.Node | None) -> bool:
    """A BatchNormalization in inference mode (running statistics, extra outputs unused)."""
    if node is None or node.op_type != "BatchNormalization" or node.domain != "":
        return False
    if node.attributes.get_int("training_mode", 0):
        return False
    return not any(out.uses() or out.is_graph_output() for out in node.outputs[1:])


def batchnorm_scale_shift(bn: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(t, s) in float64 with BN(y) = y · t + s per channel, or None if a parameter is not constant."""
    gamma, beta, mean, var = (constant(v) for v in bn.inputs[1:5])
    if any(a is None for a in (gamma, beta, mean, var)):
        return None
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + bn.attributes.get_float("epsilon", 1e-5))
    return scale, beta.astype(np.float64) - mean.astype(np.float64) * scale


def replace_value(old: ir.Value, new: ir.Value) -> None:
    """Point every reader of ``old`` (graph outputs included) at ``new``; an output keeps its name."""
    was_output, name = old.is_graph_output(), old.name
    ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
    if was_output:
        old.name = None
        new.name = name


def value_names(graph: ir.Graph) -> set[str]:
    """Every value name in use: graph inputs, initializers and node outputs."""
    names = {value.name for value in graph.inputs if value.name}
    names.update(graph.initializers)
    names.update(out.name for node in graph for out in node.outputs if out.name)
    return names


def node_names(graph: ir.Graph) -> set[str]:
    return {node.name for node in graph if node.name}


def fresh_name(base: str, taken: set[str]) -> str:
    """``base`` or ``base_1``, ``base_2``… whichever is not in ``taken``; it is added there."""
    candidate, n = base, 1
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    taken.add(candidate)
    return candidate


_SEPARATORS = re.compile(r"([./])")


def common_name(names: list[str], fallback: str, *, drop_varying: bool = False) -> str:
    """One name for nodes or tensors made from several: their common leading dotted path.

    With ``drop_varying``, names that differ in a single part lose just that part:
    ``layer1.0.branches.7.conv1`` … ``layer1.0.branches.0.conv1`` -> ``layer1.0.branches.conv1``.
    ``fallback`` when the names share no leading path.
    """
    split = [_SEPARATORS.split(name) for name in names]
    if drop_varying and len({len(parts) for parts in split}) == 1:
        differing = [i for i in range(len(split[0])) if len({parts[i] for parts in split}) > 1]
        # One varying part, or the same index repeated (TorchScript: /branches.3/branches.3.0/Conv).
        if differing and differing[0] >= 2 and all(len({parts[i] for i in differing}) == 1 for parts in split):
            dropped = set(differing) | {i - 1 for i in differing}  # the part and its separator
            return "".join(part for i, part in enumerate(split[0]) if i not in dropped)
    prefix: list[str] = []
    for parts in zip(*split):
        if len(set(parts)) > 1:
            break
        prefix.append(parts[0])
    while prefix and not _SEPARATORS.fullmatch(prefix[-1]):
        prefix.pop()  # cut at a separator: "stages.1.0." not "stages.1.0.conv_"
    return "".join(prefix[:-1]) if prefix else fallback


def join_name(prefix: str, name: str) -> str:
    """``prefix.name``, or ``prefix/name`` for TorchScript-style paths (``/stages/stages.0/…``)."""
    if not prefix:
        return name
    return f"{prefix}/{name}" if prefix.startswith("/") else f"{prefix}.{name}"


def remove_dead_nodes(graph: ir.Graph) -> int:
    """Remove every node no graph output depends on; returns how many."""
    live: set[int] = set()
    pending = [value for value in graph.outputs]
    while pending:
        node = pending.pop().producer()
        if node is None or id(node) in live:
            continue
        live.add(id(node))
        pending.extend(value for value in node.inputs if value is not None)
        for attribute in node.attributes.values():  # If/Loop bodies may read outer values
            if attribute.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
                bodies = attribute.value if attribute.type == ir.AttributeType.GRAPHS else [attribute.value]
                for body in bodies:
                    pending.extend(v for inner in ir.traversal.RecursiveGraphIterator(body) for v in inner.inputs if v)
    dead = [node for node in graph if id(node) not in live]
    graph.remove(dead, safe=True)
    return len(dead)
