"""The pass contract, on onnx_ir's pass infrastructure, and the small graph helpers the passes share.

Every graphgen pass is an :class:`onnx_ir.passes.FunctionalPass`: it rewrites a copy of the model,
never the model itself, so ``onnx_ir.passes.Sequential`` chains graphgen's passes with onnx_ir's
own. Its result is onnx_ir's :class:`~onnx_ir.passes.PassResult` plus the number of blocks
rewritten and the notes for the user, which the CLI reports; :class:`Sequential` is onnx_ir's
chain keeping both for every pass in it (composite passes such as the inference form are one).
A pass holds no per-call state: each call's notes live in that call. What a rewrite leaves unread (the nodes and initializers it
replaced) is removed by onnx_ir's ``RemoveUnusedNodesPass``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict, TypeVar

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from graphgen.passes.names import Names


@dataclass
class PassResult(ir.passes.PassResult):
    """The rewritten model (a new object), whether it differs, how many blocks the pass rewrote,
    and what the user should know about the result besides (``graphgen convert`` prints it)."""

    rewrites: int = 0
    notes: tuple[str, ...] = ()


class GraphPass(ir.passes.FunctionalPass):
    """A pass that rewrites a copy of the model: subclasses say how in :meth:`rewrite`.

    A pass keeps no state of its own between or during calls: what one call finds (its notes)
    lives in that call's frame, so one instance may run on several models at once, or inside
    itself, and each result says what its own call did.
    """

    def call(self, model: ir.Model) -> PassResult:
        model = model.clone()  # new nodes and values; tensors are shared, so never written into
        notes: list[str] = []
        rewrites = self.rewrite(model, notes)
        cleaned = RemoveUnusedNodesPass()(model).modified
        return PassResult(model, modified=bool(rewrites) or cleaned, rewrites=rewrites, notes=tuple(notes))

    def __call__(self, model_or_result: ir.Model | ir.passes.PassResult, /) -> PassResult:
        """Run the pass (onnx_ir's checks included), typed as this pass's result."""
        return _graphgen_result(self, super().__call__(model_or_result))

    @abc.abstractmethod
    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        """Rewrite ``model`` (the copy) in place; return how many blocks were rewritten.

        What the user should know about the result besides goes into ``notes`` (this call's; it
        becomes :attr:`PassResult.notes`).
        """


class Sequential(ir.passes.Sequential):
    """onnx_ir's ``Sequential`` whose result keeps what each pass reported.

    onnx_ir's own returns a bare :class:`onnx_ir.passes.PassResult`: the model and whether any
    pass modified it. This one returns a graphgen :class:`PassResult` whose ``rewrites`` sum
    those of the graphgen passes in the chain and whose ``notes`` are all of theirs, in order
    (onnx_ir's own passes report neither). Its loop is onnx_ir's, errors included; only the
    results are kept, in the call's frame.
    """

    def call(self, model: ir.Model) -> PassResult:
        modified, rewrites = False, 0
        notes: list[str] = []
        for index, pass_ in enumerate(self.passes):
            try:
                result = pass_(model)
            except Exception as error:
                before = [str(p) for p in self.passes[:index]]
                raise ir.passes.PassError(
                    f"An error occurred when running the '{pass_}' pass after the following passes: {before}"
                ) from error
            model, modified = result.model, modified or result.modified
            if isinstance(result, PassResult):
                rewrites += result.rewrites
                notes.extend(result.notes)
        return PassResult(model, modified, rewrites=rewrites, notes=tuple(notes))

    def __call__(self, model_or_result: ir.Model | ir.passes.PassResult, /) -> PassResult:
        """Run the chain (onnx_ir's checks included), typed as a graphgen result."""
        return _graphgen_result(self, super().__call__(model_or_result))


def _graphgen_result(pass_: ir.passes.PassBase, result: ir.passes.PassResult) -> PassResult:
    if not isinstance(result, PassResult):
        raise TypeError(f"{type(pass_).__name__} returned {type(result).__name__}, not a graphgen PassResult")
    return result


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


def known_constant(value: ir.Value | None) -> np.ndarray:
    """The data of a value already checked to be constant (see :func:`constant`); raises if it is not."""
    array = constant(value)
    if array is None:
        raise ValueError(f"{value!r} is not a constant")
    return array


def present(value: ir.Value | None) -> ir.Value:
    """A node input the caller knows is present (ONNX marks omitted optional inputs as None)."""
    if value is None:
        raise ValueError("an optional input the rewrite relies on is missing")
    return value


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


def add_initializer(
    graph: ir.Graph, names: Names, name: str, array: np.ndarray, dtype: np.dtype | type = np.float32
) -> ir.Value:
    """A new initializer holding ``array`` under ``name``, or a fresh variant of it."""
    value = ir.Value(name=names.fresh(name))
    set_initializer(graph, value, array, dtype)
    return value


def set_private_input(
    graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, dtype: np.dtype | type, names: Names, name: str
) -> None:
    """Make ``node`` read ``array`` at input ``index`` from an initializer no other node reads.

    The initializer there now gets the new data if only this node reads it; an input that is
    shared, computed (a Constant node, an Identity's output) or absent is replaced by a new
    initializer named ``name`` (or a fresh variant of it).
    """
    current = node.inputs[index] if len(node.inputs) > index else None
    if current is not None and current.is_initializer() and len(current.uses()) == 1:
        set_initializer(graph, current, array, dtype)
        return
    value = add_initializer(graph, names, name, array, dtype)
    if len(node.inputs) <= index:
        node.resize_inputs(index + 1)
    node.replace_input_with(index, value)


Block = TypeVar("Block")


def rewrite_blocks(
    graph: ir.Graph,
    find_next: Callable[[ir.Graph], Block | None],
    rewrite: Callable[[ir.Graph, Block, Names], None],
) -> int:
    """Rewrite blocks one at a time until ``find_next`` finds none; returns how many.

    The search restarts after each rewrite because a rewrite replaces values that later blocks
    may read. ``rewrite`` draws fresh names from one pool of value and node names.
    """
    names = Names(graph)
    rewrites = 0
    while (block := find_next(graph)) is not None:
        rewrite(graph, block, names)
        rewrites += 1
    return rewrites


def sum_tree(root: ir.Node) -> tuple[list[ir.Node], list[ir.Value | None]]:
    """The Add/Sum nodes of the sum rooted at ``root`` and the values it adds up (its leaves).

    An input produced by another Add or Sum belongs to the tree only if nothing else reads it,
    so the leaves can be recombined freely without changing any other result.
    """
    nodes: dict[int, ir.Node] = {id(root): root}
    leaves: list[ir.Value | None] = []
    pending = list(root.inputs)
    while pending:
        value = pending.pop(0)
        producer = value.producer() if value is not None else None
        if value is not None and producer is not None and is_sum(producer) and only_consumer(value) is not None:
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


class ConvGeometry(TypedDict):
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    group: int


def conv_geometry(conv: ir.Node) -> ConvGeometry | None:
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
    if gamma is None or beta is None or mean is None or var is None:
        return None
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + bn.attributes.get_float("epsilon", 1e-5))
    return scale, beta.astype(np.float64) - mean.astype(np.float64) * scale


def per_channel(value: np.ndarray | float, channels: int, rank: int = 4) -> np.ndarray | None:
    """``value`` as a [channels] float64 vector if it broadcasts over [N, C, …] (``rank`` axes) per channel.

    A scalar counts (the same factor for every channel); None for anything varying along another axis.
    """
    array = np.asarray(value, dtype=np.float64)
    if array.ndim > rank:
        return None
    array = array.reshape((1,) * (rank - array.ndim) + array.shape)
    if array.shape[0] != 1 or any(size != 1 for size in array.shape[2:]) or array.shape[1] not in (1, channels):
        return None
    return np.broadcast_to(array.reshape(-1) if array.shape[1] == channels else array.reshape(1), (channels,)).copy()


def replace_value(old: ir.Value, new: ir.Value) -> None:
    """Point every reader of ``old`` (graph outputs included) at ``new``; an output keeps its name."""
    was_output, name = old.is_graph_output(), old.name
    ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
    if was_output:
        old.name = None
        new.name = name
