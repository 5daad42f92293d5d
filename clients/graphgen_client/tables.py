"""Plain-text tables of classification results, per-layer profiles and the model list."""

from __future__ import annotations

from collections.abc import Sequence

from graphgen_protos import classifier_pb2 as pb


def classes_table(response: pb.ClassifyResponse, names: Sequence[str]) -> str:
    lines = []
    for name, result in zip(names, response.results):
        lines.append(f"{name}  ({response.model} v{response.version}, {response.provider})")
        for rank, cls in enumerate(result.classes, 1):
            lines.append(f"  {rank}. {cls.score * 100:6.2f}%  {cls.label}  [{cls.index}]")
    t = response.timings
    setup = f" + profile setup {t.profile_setup_us / 1e3:.1f}" if t.profile_setup_us else ""
    setup += f" + waiting for the profiler {t.profile_wait_us / 1e3:.1f}" if t.profile_wait_us else ""
    lines.append(
        f"time: total {t.total_us / 1e3:.1f} ms = preprocess {t.preprocess_us / 1e3:.1f} + queue {t.queue_us / 1e3:.1f}"
        f"{setup} + inference {t.inference_us / 1e3:.1f} + postprocess {t.postprocess_us / 1e3:.1f} ms"
        f" (batch of {t.batch_size})"
    )
    return "\n".join(lines)


def _figure(profile: pb.Profile, row: pb.LayerTime) -> float:
    """A row's headline figure: its median, or its fastest run where the profile's runs were disturbed."""
    return row.min_us if profile.headline == "min" else row.median_us


def profile_table(profile: pb.Profile, limit: int | None = None) -> str:
    """One row per kernel in execution order (or the ``limit`` slowest): median and spread, then the totals.

    The header says what the times are (``timing_text``: on CUDA without CUPTI, launch times).
    """
    rows = list(profile.layers)
    device = profile.timing == "device"
    if limit is not None:
        rows = sorted(rows, key=lambda r: r.device_us if device else _figure(profile, r), reverse=True)[:limit]
    width = min(max([len(r.layer) for r in rows] + [5]), 70)
    spread = profile.spread or "p10-p90"
    headline = profile.headline or "median"
    lines = [
        f"{profile.runs} runs of a batch of {profile.batch_size} after {profile.warmup_runs} warm-up runs; "
        f"times: {profile.timing_text or profile.timing}; {headline} µs and {spread}",
        f"{'layer':<{width}}  {'ops':<16}  {headline + ' µs':>10}  {spread + ' µs':>17}  {'share':>6}  {'MMACs':>8}"
        f"  {'GMAC/s':>7}" + (f"  {'GPU µs':>9}  {'launch µs':>9}" if device else ""),
    ]
    for row in rows:
        layer = row.layer if len(row.layer) <= width else row.layer[: width - 1] + "…"
        ops = "+".join(row.op_types) if row.mapped else row.kernel_op
        median, low, high = (
            (row.device_us, row.device_p10_us, row.device_p90_us)
            if device
            else (_figure(profile, row), row.p10_us, row.p90_us)
        )
        rate = f"{row.macs / median / 1e3:7.2f}" if row.macs and median else " " * 7
        line = (
            f"{layer:<{width}}  {ops:<16}  {median:>10.1f}  {f'{low:.1f}–{high:.1f}':>17}  {row.share * 100:5.1f}%"
            f"  {row.macs / 1e6:>8.1f}  {rate}"
        )
        if device:
            line += f"  {row.device_us:>9.1f}  {row.median_us:>9.1f}"
        lines.append(line)
    shown = "" if limit is None else f" (the {len(rows)} slowest of {len(profile.layers)} kernels shown)"
    total = f"GPU run {profile.device_run_us:.0f}" if device else f"inference {profile.inference_us}"
    lines.append(
        f"layers {profile.layers_us} µs + overhead {profile.overhead_us} µs = {total} µs (median run; "
        f"{spread} {profile.inference_p10_us:.0f}–{profile.inference_p90_us:.0f} µs) on {profile.provider}{shown}"
    )
    lines.append(f"profiling session setup (build waited for + warm-up): {profile.setup_us / 1e3:.1f} ms")
    unmapped = [r.kernel for r in profile.layers if not r.mapped]
    if unmapped:
        lines.append(f"kernels onnxruntime inserted (no graphgen layer): {', '.join(unmapped)}")
    if profile.unprofiled_nodes:
        lines.append(f"graphgen nodes without a kernel: {', '.join(profile.unprofiled_nodes)}")
    lines.extend(f"note: {note}" for note in profile.notes)
    return "\n".join(lines)


def models_table(models: Sequence[pb.ModelInfo]) -> str:
    lines = [f"{'model':<24} {'ver':>3}  {'state':<11}  {'provider':<22}  details"]
    for m in models:
        state = "READY" if m.ready else "UNAVAILABLE"
        details = f"input {list(m.input_shape)}, {m.num_classes} classes, {m.provider_reason}" if m.ready else m.reason
        lines.append(f"{m.name:<24} {m.version:>3}  {state:<11}  {m.provider:<22}  {details}")
    return "\n".join(lines)
