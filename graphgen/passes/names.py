"""Names for what a pass makes: fresh ones that clash with nothing, and ones derived from a block's."""

from __future__ import annotations

import re

import onnx_ir as ir


class Names:
    """Every value and node name in a graph, and fresh names that clash with none of them.

    ONNX wants value names unique in a graph and onnxruntime refuses two nodes of one name;
    one pool for both keeps a new Conv's name and its output's apart from everything else.
    """

    def __init__(self, graph: ir.Graph | None = None) -> None:
        self._taken: set[str] = set()
        if graph is None:  # an empty pool: the names of a body being written (passes/outline.py)
            return
        self._taken.update(value.name for value in graph.inputs if value.name)
        self._taken.update(graph.initializers)
        for node in graph:
            if node.name:
                self._taken.add(node.name)
            self._taken.update(out.name for out in node.outputs if out.name)

    def fresh(self, base: str) -> str:
        """``base`` or ``base_1``, ``base_2``… whichever is still free; it is taken from now on."""
        candidate, n = base, 1
        while candidate in self._taken:
            candidate, n = f"{base}_{n}", n + 1
        self._taken.add(candidate)
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


def sibling_name(weight_name: str, suffix: str) -> str:
    """``fc.weight`` -> ``fc.bias``: the name of a parameter beside a weight; ``W.bias`` otherwise."""
    return weight_name[: -len("weight")] + suffix if weight_name.endswith("weight") else f"{weight_name}.{suffix}"
