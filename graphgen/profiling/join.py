"""The profile beside ``graphgen stats``' static table: where the time goes, and why.

Each profile row computes some graphgen nodes (a fused kernel several). The static table has one
row per layer, named after the layer's first node, with its activation and BatchNorm followers
merged in. A profile row gets the parameters, MACs and activation bytes of every static row
whose name is among its nodes. The static table is computed for the profiled batch size.

Achieved rates then follow from the row's median time: GMAC/s = MACs / time, and GB/s = the
bytes onnxruntime moves for that kernel (inputs + weights + outputs, in its own layout and
element type, from the trace) / time. Arithmetic intensity = MACs / those bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from graphgen.profiling.summary import Profile
from graphgen.stats import LayerStats, ModelStats, layer_stats

if TYPE_CHECKING:
    import onnx_ir as ir


class StaticTable:
    """``graphgen stats`` of one model file, per batch size (computed once each)."""

    def __init__(self, model_path: str | Path) -> None:
        self.model_path = Path(model_path)
        self._model: ir.Model | None = None
        self._by_batch: dict[int, dict[str, LayerStats]] = {}
        self.stats: dict[int, ModelStats] = {}

    def rows(self, batch: int) -> dict[str, LayerStats]:
        if batch not in self._by_batch:
            from graphgen.onnx_io import load_model

            if self._model is None:
                self._model = load_model(self.model_path)
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
        return profile
