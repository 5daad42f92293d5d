"""The profile beside ``graphgen stats``' static table: where the time goes, and why.

Each profile row computes some graphgen nodes (a fused kernel several). The static table has one
row per layer, named after the layer's first node, with its activation and BatchNorm followers
merged in. A profile row gets the parameters, MACs and activation bytes of every static row
whose name is among its nodes. The static table is computed for the profiled batch size.

Achieved rates then follow from the row's median time: GMAC/s = MACs / time, and GB/s = the
bytes the kernel moves at least once / time: its inputs and outputs as onnxruntime sizes them in
the trace (its own layout and element type), plus its weights (from the trace, or from the graph
where onnxruntime pre-packed them and leaves them out). Arithmetic intensity = MACs / those bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import onnx_ir as ir

from graphgen.profiling.summary import Profile
from graphgen.stats import LayerStats, ModelStats, layer_stats

if TYPE_CHECKING:
    import onnx_ir as ir


def conv_kind(node: ir.Node) -> str:
    """What kind of layer a Conv/Gemm/MatMul node is (the roofline's colours); "" for other ops."""
    if node.op_type in ("Gemm", "MatMul"):
        return "dense"
    if node.op_type != "Conv":
        return ""
    group = node.attributes["group"].as_int() if "group" in node.attributes else 1
    weight = node.inputs[1].shape if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if group > 1:
        # Depthwise: one input channel per group (weight [C_out, 1, k, k]).
        return "depthwise conv" if weight is not None and weight[1] == 1 else "grouped conv"
    kernel = [d for d in weight[2:] if isinstance(d, int)] if weight is not None else []
    if kernel and all(d == 1 for d in kernel):
        return "1x1 conv"
    if kernel and all(d == 3 for d in kernel):
        return "3x3 conv"
    return "x".join(map(str, kernel)) + " conv" if kernel else "conv"


class StaticTable:
    """``graphgen stats`` of one model file, per batch size (computed once each)."""

    def __init__(self, model_path: str | Path) -> None:
        self.model_path = Path(model_path)
        self._model: ir.Model | None = None
        self._by_batch: dict[int, dict[str, LayerStats]] = {}
        self.stats: dict[int, ModelStats] = {}
        self.kinds: dict[str, str] = {}  # node name -> conv_kind
        self.itemsize = 4  # bytes per weight element (2 for an fp16 model)

    def rows(self, batch: int) -> dict[str, LayerStats]:
        if batch not in self._by_batch:
            from graphgen.onnx_io import load_model

            if self._model is None:
                self._model = load_model(self.model_path)
                self.kinds = {n.name: kind for n in self._model.graph.all_nodes() if (kind := conv_kind(n)) and n.name}
                weights = [v.const_value for v in self._model.graph.initializers.values() if v.const_value is not None]
                floats = [w for w in weights if w.dtype.is_floating_point() and w.size > 1]
                if floats:
                    self.itemsize = int(max(floats, key=lambda w: w.size).dtype.itemsize)
            stats = layer_stats(self._model, batch)
            self.stats[batch] = stats
            self._by_batch[batch] = {row.name: row for row in stats.rows if row.op != "Input"}
        return self._by_batch[batch]

    def join(self, profile: Profile) -> Profile:
        """Fill each row's parameters, MACs and activation bytes (the profile is changed in place)."""
        table = self.rows(profile.batch)
        for row in profile.rows:
            matched = [table[node] for node in row.nodes if node in table]
            row.params = sum(s.params for s in matched)
            row.macs = sum(s.macs for s in matched)
            row.activation_bytes = sum(s.activation_bytes for s in matched)
            row.kind = next((self.kinds[node] for node in row.nodes if node in self.kinds), "")
            # onnxruntime leaves pre-packed weights (Gemm's, MatMul's) out of a kernel's sizes.
            row.weight_bytes = max(row.weight_bytes, sum(s.initializer_elements for s in matched) * self.itemsize)
        return profile
