"""``--auto-keep K``: the K most sensitive layers left float, and what that bought and cost.

The int8 model is quantized and judged once (:func:`~graphgen.int8.report.evaluate`); the K
layers that lose the most SQNR themselves (:meth:`~graphgen.int8.report.Sensitivity.most_sensitive`)
are then kept float in a second quantization, judged again on the same held-out images, and the
float model and both int8 models are timed side by side: rounds of one run each, in turn, so a
busy machine slows all three alike, with the load average printed beside the figures.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import onnx_ir as ir

from graphgen.int8.images import ImageSet
from graphgen.int8.quantize import Int8Model, Int8Options, input_name, quantize
from graphgen.int8.report import Int8Report, evaluate

LATENCY_ROUNDS = 20
WARMUP_RUNS = 3


@dataclass(frozen=True)
class Latency:
    """Median milliseconds of one run per model, timed in interleaved rounds (``--auto-keep``: batch 1, one thread)."""

    median_ms: dict[str, float]
    rounds: int
    load: tuple[float, float, float]  # os.getloadavg() when the timing ended
    threads: int = 1

    def ratio(self, model: str, baseline: str) -> float:
        return self.median_ms[model] / self.median_ms[baseline]

    def describe(self) -> str:
        figures = ", ".join(f"{name} {ms:.2f} ms" for name, ms in self.median_ms.items())
        load = ", ".join(f"{value:.2f}" for value in self.load)
        return f"{figures} (median of {self.rounds} interleaved rounds, {self.threads} thread(s); load {load})"


def time_models(
    models: dict[str, ir.Model], feed: dict[str, np.ndarray], rounds: int = LATENCY_ROUNDS, threads: int = 1
) -> Latency:
    """Each model's median run time: every round runs each model once, the order rotating by round."""
    import onnxruntime as ort

    sessions = {}
    for name, model in models.items():
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        proto = ir.serde.serialize_model(model).SerializeToString()
        sessions[name] = ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])
    for session in sessions.values():
        for _ in range(WARMUP_RUNS):
            session.run(None, feed)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    names = list(sessions)
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            sessions[name].run(None, feed)
            times[name].append((time.perf_counter() - start) * 1e3)
    return Latency({name: statistics.median(times[name]) for name in names}, rounds, os.getloadavg(), threads)


@dataclass(frozen=True)
class AutoKeep:
    """The plain int8 model, the one with layers kept float, both judged, and the three timed."""

    plain: Int8Model
    kept: Int8Model
    plain_report: Int8Report
    kept_report: Int8Report
    latency: Latency

    def lines(self) -> list[str]:
        before, after = self.plain_report.agreement, self.kept_report.agreement
        images = before.images
        return [
            f"auto-keep: kept float: {', '.join(self.kept.kept)}",
            f"auto-keep: top-1 agreement {before.top1}/{images} -> {after.top1}/{images}, "
            f"top-5 {before.top5}/{images} -> {after.top5}/{images}; median relative logit error "
            f"{before.median_relative:.3g} -> {after.median_relative:.3g}",
            f"auto-keep: latency {self.latency.describe()}",
            f"auto-keep: int8 ÷ float {self.latency.ratio('int8', 'float'):.2f} -> "
            f"{self.latency.ratio('int8+kept', 'float'):.2f} with the kept layers float",
        ]


def auto_keep(
    model: ir.Model,
    calibration: ImageSet,
    held_out: ImageSet,
    options: Int8Options,
    count: int,
    on_plain: Callable[[Int8Model, Int8Report], None] | None = None,
) -> AutoKeep:
    """Quantize, judge, keep the ``count`` most sensitive layers float (beside ``options.keep_float``), judge, time."""
    plain = quantize(model, calibration, options)
    plain_report = evaluate(model, plain.model, held_out)
    if on_plain is not None:
        on_plain(plain, plain_report)
    ranked = [row.name for row in plain_report.sensitivity.most_sensitive(len(plain_report.sensitivity.rows))]
    chosen = [name for name in ranked if name not in options.keep_float][:count]
    keep = (*options.keep_float, *chosen)
    kept = quantize(model, calibration, replace(options, keep_float=keep))
    kept_report = evaluate(model, kept.model, held_out)
    feed = {input_name(model): held_out.tensors[0][None]}
    latency = time_models({"float": model, "int8": plain.model, "int8+kept": kept.model}, feed)
    return AutoKeep(plain, kept, plain_report, kept_report, latency)
