"""``graphgen bench``: latency and throughput of architectures on this machine, beside their GMACs.

The platform-aware table: the same GMACs do not cost the same time on every device (a depthwise
convolution's MACs are cheap to count and dear to run). Columns follow timm's ``benchmark.py``
inference results (``benchmark-infer-*.csv``: ``model, infer_img_size, infer_samples_per_sec,
infer_step_time, infer_batch_size, param_count, infer_gmacs, infer_macts``), with the step time
given as a median and its p10–p90 spread over the runs rather than a mean. Each architecture is
built once (random weights, BatchNorm folded, dynamic batch) and run on onnxruntime with the
given providers; warm-up runs are not counted.
"""

from __future__ import annotations

import csv
import functools
import io
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from graphgen import registry
from graphgen.errors import UserError
from graphgen.profiling.session import DEFAULT_WARMUP_RUNS, Providers
from graphgen.profiling.summary import SPREAD, Spread

CSV_COLUMNS = (
    "model",
    "infer_img_size",
    "infer_samples_per_sec",
    "infer_step_time",
    "infer_step_time_p10",
    "infer_step_time_p90",
    "infer_batch_size",
    "param_count",
    "infer_gmacs",
    "infer_macts",
    "provider",
)


@dataclass(frozen=True)
class BenchRow:
    name: str  # the architecture, with its options (e.g. "repvgg_a0 --deploy")
    resolution: int
    batch: int
    provider: str
    params: int
    gmacs: float  # per image
    macts: float  # millions of activations (layer outputs) per image
    latency: Spread  # µs per batch over the runs

    @property
    def samples_per_s(self) -> float:
        return self.batch / (self.latency.median / 1e6)


def variants_for(name: str, variant: dict[str, object]) -> dict[str, object]:
    """The architecture options that ``name`` takes (``--deploy`` applies to RepVGG, not to ResNet)."""
    takes = {option.name for option in registry.get(name).options}
    return {key: value for key, value in variant.items() if key in takes}


Runner = Callable[[dict[str, np.ndarray]], object]


def _provider_name(provider: str | tuple[str, dict[str, Any]]) -> str:
    return provider if isinstance(provider, str) else provider[0]


def _runners(
    path: Path,
    runtimes: Sequence[str],
    providers: Providers,
    make_options: Callable[[], ort.SessionOptions],
    threads: int,
    openvino_precision: str,
) -> list[tuple[str, Runner]]:
    """For each runtime: what its rows are labelled (provider, precision) and one run of the model."""
    runners: list[tuple[str, Runner]] = []
    for runtime in runtimes:
        if runtime == "openvino":
            from graphgen.profiling.openvino import compile_model

            compiled, settings = compile_model(path, threads=threads, precision=openvino_precision)
            runners.append((f"OpenVINO CPU {settings.precision}", compiled.create_infer_request().infer))
        else:
            session_options = make_options()
            session_options.log_severity_level = 3
            # enable_fallback=0 and the check after it, as graphgen profile: a CUDA session that
            # onnxruntime built on the CPU would be timed and printed as if it ran on the GPU asked for.
            session = ort.InferenceSession(str(path), session_options, providers=list(providers), enable_fallback=0)
            asked, built = _provider_name(providers[0]), session.get_providers()[0]
            if built != asked:
                raise UserError(f"--device cuda: onnxruntime could not start {asked} and ran on {built}")
            runners.append((built, functools.partial(session.run, None)))
    return runners


def bench_architecture(
    name: str,
    batches: Sequence[int],
    *,
    runs: int = 10,
    variant: dict[str, object] | None = None,
    providers: Providers = ("CPUExecutionProvider",),
    make_options: Callable[[], ort.SessionOptions] = ort.SessionOptions,
    runtimes: Sequence[str] = ("onnxruntime",),
    threads: int = 0,
    openvino_precision: str = "f32",
) -> list[BenchRow]:
    """One row per batch size and runtime for architecture ``name``; the runtimes' runs interleaved (A/B/A/B)."""
    from graphgen.build import BuildOptions, build
    from graphgen.onnx_io import save_model
    from graphgen.stats import layer_stats

    options = variants_for(name, variant or {})
    model = build(name, BuildOptions(variant=options))
    stats = layer_stats(model, 1)
    label = name + "".join(f" --{key}" if value is True else f" --{key} {value}" for key, value in options.items())
    declared = model.graph.inputs[0].shape
    if declared is None:
        raise ValueError(f"{name}: the model's input has no shape")
    shape = [d if isinstance(d, int) else 1 for d in declared]
    input_name = model.graph.inputs[0].name or "input"
    with tempfile.TemporaryDirectory(prefix="graphgen-bench-") as tmp:
        path = save_model(model, Path(tmp) / "model.onnx")
        del model
        runners = _runners(path, runtimes, providers, make_options, threads, openvino_precision)
    activations = sum(row.activations for row in stats.rows if row.op != "Input")
    rows = []
    for batch in batches:
        feeds = {input_name: np.random.default_rng(0).standard_normal((batch, *shape[1:]), dtype=np.float32)}
        for _, run in runners:
            for _ in range(DEFAULT_WARMUP_RUNS):
                run(feeds)
        times: list[list[float]] = [[] for _ in runners]
        for _ in range(runs):
            for index, (_, run) in enumerate(runners):
                started = time.perf_counter()
                run(feeds)
                times[index].append((time.perf_counter() - started) * 1e6)
        for (provider, _), measured in zip(runners, times):
            rows.append(
                BenchRow(
                    label,
                    shape[-1],
                    batch,
                    provider,
                    stats.params,
                    stats.macs / 1e9,
                    activations / 1e6,
                    Spread.of(measured),
                )
            )
    return rows


def format_table(rows: Sequence[BenchRow]) -> str:
    providers = list(dict.fromkeys(r.provider for r in rows))
    several = len(providers) > 1
    width = max([len("model"), *(len(r.name) for r in rows)])
    runtime_width = max(len(p) for p in providers) if several else 0
    lines = [
        f"{'model':<{width}}  {'res':>4}  {'batch':>5}  {'samples/s':>10}  {'step ms':>9}  {SPREAD + ' ms':>15}"
        f"  {'params M':>8}  {'GMACs':>7}  {'Mact':>6}" + (f"  {'runtime':<{runtime_width}}" if several else "")
    ]
    for r in rows:
        spread = f"{r.latency.p10 / 1e3:.2f}–{r.latency.p90 / 1e3:.2f}"
        lines.append(
            f"{r.name:<{width}}  {r.resolution:>4}  {r.batch:>5}  {r.samples_per_s:>10.1f}"
            f"  {r.latency.median / 1e3:>9.2f}  {spread:>15}  {r.params / 1e6:>8.2f}  {r.gmacs:>7.3f}  {r.macts:>6.2f}"
            + (f"  {r.provider:<{runtime_width}}" if several else "")
        )
    if several:
        for (name, batch), group in _groups(rows).items():
            base = group[0]
            ratios = ", ".join(f"{r.provider} {r.latency.median / base.latency.median:.2f}×" for r in group[1:])
            lines.append(f"{name} batch {batch}: step time ÷ {base.provider}'s: {ratios} (runs interleaved)")
    lines.append(
        f"{', '.join(providers)}; step = one run of a batch (median of the runs, {SPREAD} spread); GMACs, Mact per image; "
        "Mact = elements of every layer output (graphgen stats; timm counts convolution outputs only); columns as timm's benchmark-infer-*.csv"
    )
    return "\n".join(lines)


def _groups(rows: Sequence[BenchRow]) -> dict[tuple[str, int], list[BenchRow]]:
    groups: dict[tuple[str, int], list[BenchRow]] = {}
    for row in rows:
        groups.setdefault((row.name, row.batch), []).append(row)
    return groups


def to_csv(rows: Sequence[BenchRow]) -> str:
    """timm's ``benchmark-infer-*.csv`` columns (step times in ms, params in millions), plus p10/p90 and provider."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r.name,
                r.resolution,
                round(r.samples_per_s, 2),
                round(r.latency.median / 1e3, 3),
                round(r.latency.p10 / 1e3, 3),
                round(r.latency.p90 / 1e3, 3),
                r.batch,
                round(r.params / 1e6, 2),
                round(r.gmacs, 2),
                round(r.macts, 2),
                r.provider,
            ]
        )
    return out.getvalue()
