"""A profile from the wire (graphgen.v1.Profile) back into graphgen's :class:`~graphgen.profiling.summary.Profile`.

So that the client writes a server's profile with the same trace writer ``graphgen profile --trace``
uses (:mod:`graphgen.profiling.chrome_trace`). The wire form keeps each row's median, p10, p90, min
and max, but only the whole runs' median and p10–p90 (min and max are taken as those).
"""

from __future__ import annotations

from graphgen.profiling.summary import LayerRow, Profile, RunTimeline, Span, Spread
from graphgen_protos import classifier_pb2 as pb


def profile_from_message(message: pb.Profile) -> Profile:
    rows = [
        LayerRow(
            layer=layer.layer,
            nodes=tuple(layer.nodes),
            op_types=tuple(layer.op_types),
            kernel=layer.kernel,
            kernel_op=layer.kernel_op,
            provider=layer.provider,
            time=Spread(layer.median_us, layer.p10_us, layer.p90_us, layer.min_us, layer.max_us),
            io_bytes=layer.bytes,
            device=(
                Spread(
                    layer.device_us, layer.device_p10_us, layer.device_p90_us, layer.device_p10_us, layer.device_p90_us
                )
                if layer.device_us
                else None
            ),
            params=layer.params,
            macs=layer.macs,
            activation_bytes=layer.activation_bytes,
            kind=layer.kind,
        )
        for layer in message.layers
    ]
    run = Spread(
        message.inference_us,
        message.inference_p10_us,
        message.inference_p90_us,
        message.inference_p10_us,
        message.inference_p90_us,
    )
    timeline = [
        RunTimeline(r.start_us, r.dur_us, tuple(Span(k.layer, k.start_us, k.dur_us, k.thread) for k in r.kernels))
        for r in message.timeline
    ]
    return Profile(
        rows=rows,
        run=run,
        runs=message.runs,
        warmup_runs=message.warmup_runs,
        batch=message.batch_size,
        provider=message.provider,
        timing=message.timing or "host",
        unprofiled=tuple(message.unprofiled_nodes),
        notes=list(message.notes),
        spread=message.spread or "p10-p90",
        runtime=message.runtime or "onnxruntime",
        cpu_waits=list(message.run_cpu_waits),
        headline=message.headline or "median",
        timeline=timeline,
    )
