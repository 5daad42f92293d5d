"""Which graphgen layer each QuantizeLinear / DequantizeLinear node of an int8 (QDQ) model belongs to.

In QDQ notation ``DQ → op → Q`` is the op computed in int8, and onnxruntime fuses it so: the
Q/DQ nodes around a layer are that layer's. A DequantizeLinear belongs to the op that reads it (a
weight's DQ to its Conv, an activation's DQ to the next layer), a QuantizeLinear to the op whose
output it quantizes; where that side has none (the graph's input) the other side is taken. Both a
single profile (:mod:`graphgen.profiling.layermap`) and a comparison of forms
(:mod:`graphgen.profiling.comparison`) name Q/DQ kernels this way.
"""

from __future__ import annotations

import onnx

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


def node_owners(graph: onnx.GraphProto) -> dict[str, str]:
    """Each Q/DQ node's graphgen node (the layer it quantizes for); nodes not in the map own themselves."""
    nodes = [node for node in graph.node if node.op_type != "Constant"]
    producer = {value: node for node in nodes for value in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for value in node.input:
            consumers.setdefault(value, []).append(node)

    def upstream(node: onnx.NodeProto) -> onnx.NodeProto | None:
        seen = set()
        while node.op_type in QDQ_OPS and node.name not in seen:
            seen.add(node.name)
            before = producer.get(node.input[0]) if node.input else None
            if before is None:
                return None
            node = before
        return node if node.op_type not in QDQ_OPS else None

    def downstream(node: onnx.NodeProto) -> onnx.NodeProto | None:
        seen = set()
        while node.op_type in QDQ_OPS and node.name not in seen:
            seen.add(node.name)
            after = [c for value in node.output for c in consumers.get(value, [])]
            if not after:
                return None
            node = after[0]
        return node if node.op_type not in QDQ_OPS else None

    owners = {}
    for node in nodes:
        if node.op_type not in QDQ_OPS or not node.name:
            continue
        first, second = (downstream, upstream) if node.op_type == "DequantizeLinear" else (upstream, downstream)
        owner = first(node) or second(node)
        if owner is not None and owner.name:
            owners[node.name] = owner.name
    return owners
