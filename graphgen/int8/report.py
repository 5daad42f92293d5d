"""How far an int8 model strays from its float model, judged on held-out images, layer by layer.

* **Agreement**: top-1 — the int8 model's best class is the float model's; top-5 — the float
  model's best class is among the int8 model's five best. Both count images.
* **Relative logit error** per image: max |int8 − float| / max |float| over its logits (the
  measure ``graphgen convert --verify`` uses for lossless conversions); its maximum and median.
* **Sensitivity**: three SQNRs per graphgen layer (:mod:`graphgen.int8.sensitivity`): its output
  in the int8 model, the layer alone in int8, and the logits with that layer alone in int8.

Both models run on onnxruntime's CPU provider with its full optimisation, as the server runs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from graphgen.int8.images import ImageSet
from graphgen.int8.sensitivity import LayerSQNR, measure

TOP_K = 5


@dataclass(frozen=True)
class Agreement:
    """Top-1/top-5 agreement with the float model and the relative logit error, over ``images`` images."""

    images: int
    top1: int
    top5: int
    max_relative: float
    median_relative: float

    def describe(self) -> str:
        return (
            f"top-1 agreement {self.top1}/{self.images}, top-5 {self.top5}/{self.images}; "
            f"relative logit error max {self.max_relative:.3g}, median {self.median_relative:.3g}"
        )


def agreement(float_logits: np.ndarray, int8_logits: np.ndarray) -> Agreement:
    """Compare two (images × classes) logit arrays; see the module's docstring for the measures."""
    if float_logits.shape != int8_logits.shape or float_logits.ndim != 2 or not len(float_logits):
        raise ValueError(f"logits of shapes {float_logits.shape} and {int8_logits.shape}: need equal (N, C), N > 0")
    reference = float_logits.astype(np.float64)
    quantized = int8_logits.astype(np.float64)
    best = reference.argmax(axis=1)
    top1 = int((quantized.argmax(axis=1) == best).sum())
    k = min(TOP_K, reference.shape[1])
    int8_top = np.argsort(-quantized, axis=1, kind="stable")[:, :k]
    top5 = int((int8_top == best[:, None]).any(axis=1).sum())
    scale = np.maximum(np.abs(reference).max(axis=1), 1e-30)
    relative = np.abs(quantized - reference).max(axis=1) / scale
    return Agreement(len(reference), top1, top5, float(relative.max()), float(np.median(relative)))


@dataclass(frozen=True)
class Sensitivity:
    """Every layer's SQNRs in graph order, the quantized image input first."""

    rows: tuple[LayerSQNR, ...]

    def worst(self, count: int = 1) -> list[LayerSQNR]:
        """The ``count`` layers whose int8 output is furthest from float (the lowest SQNR)."""
        return sorted(self.rows, key=lambda row: row.sqnr_db)[:count]

    def most_sensitive(self, count: int) -> list[LayerSQNR]:
        """The ``count`` layers that cost the logits most when int8 alone: what ``--auto-keep`` keeps float."""
        ranked = [row for row in self.rows if row.at_logits_db is not None and row.op != "Input"]
        return sorted(ranked, key=lambda row: row.at_logits_db if row.at_logits_db is not None else math.inf)[:count]

    def row(self, name: str) -> LayerSQNR:
        return next(row for row in self.rows if row.name == name)


@dataclass(frozen=True)
class Int8Report:
    """What ``--verify`` says of an int8 model: agreement and per-layer sensitivity on held-out images."""

    held_out: tuple[Path, ...]
    agreement: Agreement
    sensitivity: Sensitivity
    float_logits: np.ndarray
    int8_logits: np.ndarray

    def lines(self, count: int = 5) -> list[str]:
        images = len(self.held_out)
        lines = [f"verify: int8 against float on {images} held-out image(s): {self.agreement.describe()}"]
        worst = self.sensitivity.worst(count)
        lines.append(f"verify: lowest SQNR (dB, the layer's int8 output against float): {_named(worst, 'sqnr_db')}")
        sensitive = self.sensitivity.most_sensitive(count)
        if sensitive:
            lines.append(
                f"verify: most sensitive (dB, the logits' SQNR with that layer alone in int8): "
                f"{_named(sensitive, 'at_logits_db')}"
            )
        return lines

    def table(self) -> list[str]:
        """Every layer in graph order: SQNR, own, at logits (dB)."""
        width = max((len(row.name) for row in self.sensitivity.rows), default=5)
        header = f"{'layer':<{width}}  {'op':<17} {'SQNR dB':>8} {'own dB':>7} {'at logits dB':>12}"
        rows = [
            f"{row.name:<{width}}  {row.op:<17} {_db(row.sqnr_db):>8} {_db(row.own_db):>7} {_db(row.at_logits_db):>12}"
            for row in self.sensitivity.rows
        ]
        return [header, *rows]


def _db(value: float | None) -> str:
    if value is None:
        return "—"
    return "exact" if math.isinf(value) else f"{value:.1f}"


def _named(rows: list[LayerSQNR], field: str) -> str:
    return ", ".join(f"{row.name} {_db(getattr(row, field))}" for row in rows)


def evaluate(float_model: ir.Model, int8_model: ir.Model, images: ImageSet, *, per_layer: bool = True) -> Int8Report:
    """Judge ``int8_model`` against ``float_model`` on ``images`` (held out from calibration)."""
    measured = measure(float_model, int8_model, images, _session, per_layer=per_layer)
    return Int8Report(
        images.files,
        agreement(measured.float_logits, measured.int8_logits),
        Sensitivity(measured.layers),
        measured.float_logits,
        measured.int8_logits,
    )


def _session(proto: onnx.ModelProto) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
