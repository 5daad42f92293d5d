"""Name onnxruntime's kernels after graphgen's layers.

onnxruntime profiles the *optimised* graph, whose nodes are not graphgen's: it fuses a Conv
with its activation (and a residual Add) into one kernel, converts to its blocked NCHWc layout
and inserts layout reorders. What it keeps is a trace of the original names, which this module
reads in four ways, in order (the first that applies wins):

1. the kernel keeps an original node's name (``_fc``, ``layer1.0.conv1`` at lower optimisation
   levels, or on most CUDA kernels);
2. one of the kernel's outputs keeps an original value's name: the kernel ends at that value;
3. the kernel's name is an original value's name plus a suffix (``v_layer1.0.relu.Relu_6_nchwc``:
   the NCHWc transformer names a kernel after the value it replaces);
4. the kernel's name is an original node's name plus a suffix.

That gives each kernel one *anchor* node. Fusion then widens the anchor into the run of nodes the
kernel computes, following the original graph's data flow through nodes that no kernel anchors
(they vanished into some kernel):

* upstream, to the kernel's main op: a kernel named after an activation (``..._relu6.Clip_5``)
  computes the Conv before it — walk back through vanished producers until the node of the
  kernel's op type (``Conv``; ``FusedConv`` counts as ``Conv``) is included;
* downstream, through element-wise ops only (activations, a residual Add), along single-consumer
  chains of vanished nodes whose other inputs the kernel reads: a kernel named after a Conv that
  also computes the Add and ReLU after it. "Reads" is decided on the optimised graph: each
  kernel's output is known to stand for the last original value of its region, so when two
  Convs meet in an Add, the Add goes to the kernel that takes the other Conv's result as input.

Kernels with no anchor are onnxruntime's own (``ReorderInput``/``ReorderOutput``, device copies):
they are reported as such, never hidden. Nor are the Casts onnxruntime inserts around float16 nodes it
runs in float32 (``InsertedPrecisionFreeCast_*``): the nodes it moves there keep their original names
behind that prefix, which is read through. Original nodes no kernel covers (an Identity the
optimiser removed) are listed as unprofiled. In an int8 (QDQ) model the QuantizeLinear and
DequantizeLinear nodes are named after the layer they quantize for (:mod:`graphgen.profiling.qdq`):
a Q/DQ kernel onnxruntime left standalone counts to that layer, and those it fused away are not
listed as unprofiled when their layer's kernel ran.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import onnx

from graphgen.elementwise import ACTIVATIONS, BINARY
from graphgen.profiling.qdq import node_owners

# Ops onnxruntime fuses into the kernel of the op before them (activation, residual sum, scaling).
ELEMENTWISE = ACTIVATIONS | BINARY | {"BatchNormalization", "Identity", "Dropout"}
SEPARATORS = ("_", ".", "/", ":")
# Kernels onnxruntime inserts itself: layout conversions and device copies. One may write an
# original value (ReorderOutput restores NCHW), but it computes no layer.
INSERTED_OPS = frozenset({"ReorderInput", "ReorderOutput", "MemcpyFromHost", "MemcpyToHost"})
# Where a provider lacks a float16 kernel (CPU), onnxruntime computes in float32 between Casts it
# inserts, and renames the nodes and values it moves there with this prefix.
PRECISION_CAST = "InsertedPrecisionFreeCast_"


def _unprefixed(name: str) -> str:
    return name.removeprefix(PRECISION_CAST)


@dataclass(frozen=True)
class KernelOrigin:
    """The graphgen nodes one optimised-graph kernel computes (empty: onnxruntime's own kernel)."""

    nodes: tuple[str, ...]
    op_types: tuple[str, ...]

    @property
    def mapped(self) -> bool:
        return bool(self.nodes)

    @property
    def layer(self) -> str:
        return " + ".join(self.nodes)


@dataclass(frozen=True)
class LayerMap:
    kernels: dict[str, KernelOrigin]  # optimised node name -> origin
    unprofiled: tuple[str, ...]  # original nodes that no kernel computes

    def origin(self, kernel: str) -> KernelOrigin:
        return self.kernels.get(kernel, KernelOrigin((), ()))


class _Original:
    """The original graph's topology, indexed for the walks."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = [n for n in graph.node if n.op_type != "Constant"]
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        for i, node in enumerate(self.nodes):
            for value in node.output:
                self.producer[value] = i
            for value in node.input:
                if value:
                    self.consumers[value].append(i)
        # Longest names first, so `layer1.10` is tried before `layer1.1`.
        self.value_names = sorted(self.producer, key=len, reverse=True)
        self.node_names = sorted(self.index, key=len, reverse=True)

    def anchor(self, kernel: onnx.NodeProto) -> int | None:
        if kernel.op_type in INSERTED_OPS or (kernel.op_type == "Cast" and kernel.name.startswith(PRECISION_CAST)):
            return None
        name = _unprefixed(kernel.name)
        if name in self.index:
            return self.index[name]
        for value in map(_unprefixed, kernel.output):
            if value in self.producer:
                return self.producer[value]
        prefix = _longest_prefix(name, self.value_names)
        if prefix is not None:
            return self.producer[prefix]
        node = _longest_prefix(name, self.node_names)
        return self.index[node] if node is not None else None


def _longest_prefix(name: str, candidates: list[str]) -> str | None:
    for candidate in candidates:
        if name.startswith(candidate) and (len(name) == len(candidate) or name[len(candidate)] in SEPARATORS):
            return candidate
    return None


def _main_op(kernel_op: str) -> str:
    return kernel_op.removeprefix("Fused")


def map_layers(original: onnx.GraphProto, optimized: onnx.GraphProto) -> LayerMap:
    """Map every node of ``optimized`` (onnxruntime's optimised graph) to nodes of ``original``."""
    graph = _Original(original)
    kernels = list(optimized.node)  # onnxruntime writes them in topological order
    anchors = {k.name: graph.anchor(k) for k in kernels}
    anchored = {a for a in anchors.values() if a is not None}
    assigned: dict[int, str] = {a: name for name, a in anchors.items() if a is not None}
    regions: dict[str, list[int]] = {}
    # Optimised-graph value -> the original value it stands for (same name, or a kernel's result).
    known = set(graph.producer) | set(graph.consumers)
    stands_for = {v: _unprefixed(v) for n in optimized.node for v in n.input if _unprefixed(v) in known}
    for kernel in kernels:
        reads = {stands_for[v] for v in kernel.input if v in stands_for}
        anchor = anchors[kernel.name]
        if anchor is None:
            if len(reads) == 1 and len(kernel.output) == 1:  # a reorder or copy: same values, other layout
                stands_for[kernel.output[0]] = next(iter(reads))
            continue
        region = [anchor]
        _widen_upstream(graph, region, _main_op(kernel.op_type), anchored, assigned, kernel.name)
        _widen_downstream(graph, region, reads, anchored, assigned, kernel.name)
        regions[kernel.name] = sorted(set(region))
        if kernel.output:
            stands_for[kernel.output[0]] = graph.nodes[max(region)].output[0]  # nodes are in topological order
    # An int8 (QDQ) model's Q/DQ nodes belong to the layer they quantize for (graphgen.profiling.qdq):
    # a kernel of a Q or DQ is that layer's, and the Q/DQ nodes fused into a layer's kernel vanish with it.
    owners = node_owners(original)
    op_type = {node.name: node.op_type for node in graph.nodes}

    def folded(indices: list[int]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(owners.get(graph.nodes[i].name, graph.nodes[i].name) for i in indices))

    origins = {}
    for kernel in kernels:
        names = folded(regions.get(kernel.name, []))
        origins[kernel.name] = KernelOrigin(names, tuple(op_type.get(name, "") for name in names))
    covered = {name for origin in origins.values() for name in origin.nodes}
    unprofiled = tuple(
        name for name in folded([i for i in range(len(graph.nodes)) if i not in assigned]) if name not in covered
    )
    return LayerMap(origins, unprofiled)


def _widen_upstream(
    graph: _Original, region: list[int], main_op: str, anchored: set[int], assigned: dict[int, str], kernel: str
) -> None:
    """Walk back from the anchor through vanished producers until the kernel's main op is included."""
    current = region[0]
    while graph.nodes[current].op_type != main_op:
        producers = [
            graph.producer[v]
            for v in graph.nodes[current].input
            if v in graph.producer and graph.producer[v] not in anchored and graph.producer[v] not in assigned
        ]
        if len(producers) != 1:
            return
        current = producers[0]
        region.append(current)
        assigned[current] = kernel


def _widen_downstream(
    graph: _Original, region: list[int], reads: set[str], anchored: set[int], assigned: dict[int, str], kernel: str
) -> None:
    """Follow single-consumer chains of vanished element-wise nodes (fused activations, residual sums)."""
    current = region[0]
    while True:
        outputs = graph.nodes[current].output
        consumers = [c for v in outputs for c in graph.consumers.get(v, [])]
        if len(consumers) != 1:
            return
        follower = consumers[0]
        node = graph.nodes[follower]
        if follower in anchored or follower in assigned or node.op_type not in ELEMENTWISE:
            return
        inside = {v for i in region for v in graph.nodes[i].output}
        if any(v and v in graph.producer and v not in inside and v not in reads for v in node.input):
            return  # it needs a value this kernel does not read: another kernel computes it
        region.append(follower)
        assigned[follower] = kernel
        current = follower
