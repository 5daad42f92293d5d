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
    lines.append(
        f"time: total {t.total_us / 1e3:.1f} ms = preprocess {t.preprocess_us / 1e3:.1f} + queue {t.queue_us / 1e3:.1f}"
        f" + inference {t.inference_us / 1e3:.1f} + postprocess {t.postprocess_us / 1e3:.1f} ms"
        f" (batch of {t.batch_size})"
    )
    return "\n".join(lines)


def profile_table(profile: pb.Profile, limit: int | None = None) -> str:
    """One row per kernel in execution order (or the ``limit`` slowest), then the totals."""
    rows = list(profile.layers)
    if limit is not None:
        rows = sorted(rows, key=lambda r: r.time_us, reverse=True)[:limit]
    width = min(max([len(r.layer) for r in rows] + [5]), 70)
    lines = [f"{'layer':<{width}}  {'ops':<16}  {'µs':>8}  {'share':>6}"]
    for row in rows:
        layer = row.layer if len(row.layer) <= width else row.layer[: width - 1] + "…"
        ops = "+".join(row.op_types) if row.mapped else row.kernel_op
        lines.append(f"{layer:<{width}}  {ops:<16}  {row.time_us:>8}  {row.share * 100:5.1f}%")
    shown = "" if limit is None else f" (the {len(rows)} slowest of {len(profile.layers)} kernels shown)"
    lines.append(
        f"layers {profile.layers_us} µs + overhead {profile.overhead_us} µs = inference {profile.inference_us} µs"
        f" on {profile.provider}{shown}"
    )
    unmapped = [r.kernel for r in profile.layers if not r.mapped]
    if unmapped:
        lines.append(f"kernels onnxruntime inserted (no graphgen layer): {', '.join(unmapped)}")
    if profile.unprofiled_nodes:
        lines.append(f"graphgen nodes without a kernel: {', '.join(profile.unprofiled_nodes)}")
    return "\n".join(lines)


def models_table(models: Sequence[pb.ModelInfo]) -> str:
    lines = [f"{'model':<24} {'ver':>3}  {'state':<11}  {'provider':<22}  details"]
    for m in models:
        state = "READY" if m.ready else "UNAVAILABLE"
        details = f"input {list(m.input_shape)}, {m.num_classes} classes, {m.provider_reason}" if m.ready else m.reason
        lines.append(f"{m.name:<24} {m.version:>3}  {state:<11}  {m.provider:<22}  {details}")
    return "\n".join(lines)
