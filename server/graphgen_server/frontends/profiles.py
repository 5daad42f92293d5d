"""A per-layer profile's wire form: graphgen.v1.Profile (classifier.proto).

Classify returns it as a message; KServe's ``graphgen_profile`` response parameter carries it as
JSON (:func:`graphgen_server.frontends.kserve_common.profile_json`).
"""

from __future__ import annotations

from graphgen.profiling.summary import Profile
from graphgen_protos import classifier_pb2 as pb


def profile_message(profile: Profile, *, timeline: bool = False) -> pb.Profile:
    """The wire form of a profile (Classify's ``profile``; ModelInfer's ``graphgen_profile`` as JSON).

    ``timeline``: also every measured run's kernels (asked for by ``profile_timeline``; a profile of
    100 runs of a large model holds tens of thousands of them, so only when asked).
    """
    layers = []
    for row in profile.rows:
        device = row.device
        layers.append(
            pb.LayerTime(
                layer=row.layer,
                nodes=row.nodes,
                op_types=row.op_types,
                kernel=row.kernel,
                kernel_op=row.kernel_op,
                provider=row.provider,
                time_us=round(profile.figure(row)),
                share=profile.share(row),
                mapped=row.mapped,
                median_us=row.time.median,
                p10_us=row.time.p10,
                p90_us=row.time.p90,
                min_us=row.time.min,
                max_us=row.time.max,
                device_us=device.median if device else 0.0,
                device_p10_us=device.p10 if device else 0.0,
                device_p90_us=device.p90 if device else 0.0,
                bytes=row.bytes,
                params=row.params,
                macs=row.macs,
                activation_bytes=row.activation_bytes,
                kind=row.kind,
            )
        )
    return pb.Profile(
        layers=layers,
        layers_us=round(profile.layers_us),
        inference_us=round(profile.run.median),
        inference_p10_us=profile.run.p10,
        inference_p90_us=profile.run.p90,
        overhead_us=round(_whole_run_median(profile)) - round(profile.layers_us),
        unprofiled_nodes=profile.unprofiled,
        provider=profile.provider,
        runs=profile.runs,
        warmup_runs=profile.warmup_runs,
        batch_size=profile.batch,
        spread=profile.spread,
        timing=profile.timing,
        timing_text=profile.timing_text,
        device_run_us=profile.device_run.median if profile.device_run else 0.0,
        setup_us=round(profile.setup_us),
        build_us=round(profile.build_us),
        between_kernels_us=profile.between_kernels.median if profile.between_kernels else 0.0,
        notes=profile.notes,
        runtime=profile.runtime,
        run_cpu_waits=profile.cpu_waits,
        headline=profile.headline,
        timeline=_timeline(profile) if timeline else [],
    )


def _whole_run_median(profile: Profile) -> float:
    """What overhead_us is against: the median whole run (the CUPTI run span where measured), whatever the headline."""
    return profile.device_run.median if profile.device_run and profile.timing == "device" else profile.run.median


def _timeline(profile: Profile) -> list[pb.ProfileRun]:
    return [
        pb.ProfileRun(
            start_us=run.start_us,
            dur_us=run.dur_us,
            kernels=[
                pb.KernelSpan(layer=s.row, start_us=s.start_us, dur_us=s.dur_us, thread=s.thread) for s in run.spans
            ],
        )
        for run in profile.timeline
    ]
