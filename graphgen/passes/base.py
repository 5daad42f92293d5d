"""What every pass returns, and the small graph helpers the passes share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir


@dataclass(frozen=True)
class PassResult:
    """The rewritten model (a new object) and how many blocks the pass rewrote."""

    model: ir.Model
    rewrites: int


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The value's data if it is a constant initializer, else None."""
    if value is None or value.const_value is None or not value.is_initializer():
        return None
    return value.const_value.numpy()


def only_consumer(value: ir.Value) -> ir.Node | None:
    """The single node reading ``value``, if exactly one does and it is no graph output."""
    users = {id(node): node for node, _ in value.uses()}
    if len(users) != 1 or value.is_graph_output():
        return None
    return next(iter(users.values()))


def set_initializer(graph: ir.Graph, value: ir.Value, array: np.ndarray) -> None:
    """Give an initializer new data, never touching the tensor the input model still holds."""
    value.const_value = ir.Tensor(np.ascontiguousarray(array, dtype=np.float32), name=value.name)
    value.shape = ir.Shape(array.shape)
    if value.name not in graph.initializers:
        graph.register_initializer(value)


def remove_unused_initializers(graph: ir.Graph) -> None:
    for name in [
        name for name, value in graph.initializers.items() if not value.uses() and not value.is_graph_output()
    ]:
        del graph.initializers[name]
