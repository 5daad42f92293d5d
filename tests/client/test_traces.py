"""A server's profile on the wire and back: the client writes the trace ``graphgen profile --trace`` would."""

from __future__ import annotations

from graphgen.profiling.chrome_trace import trace_events
from graphgen.profiling.layermap import KernelOrigin, LayerMap
from graphgen.profiling.summary import summarize
from graphgen.profiling.trace import KernelEvent, RunTrace
from graphgen_client.traces import profile_from_message
from graphgen_server.frontends.profiles import profile_message

LAYERS = LayerMap({"k_a": KernelOrigin(("a", "a_relu"), ("Conv", "Relu")), "k_b": KernelOrigin(("b",), ("Conv",))}, ())


def _profile():
    runs = []
    for index in range(3):
        start = 5000 + index * 1000
        kernels = [
            KernelEvent("k_a", "FusedConv", "CPUExecutionProvider", start + 2, 100 + index, 41, 10, 20),
            KernelEvent("ReorderOutput", "ReorderOutput", "CPUExecutionProvider", start + 110, 3, 41, 8, 0),
            KernelEvent("k_b", "Conv", "CPUExecutionProvider", start + 120, 50 + 7 * index, 41, 10, 0),
        ]
        runs.append(RunTrace(start, 180, kernels))
    profile = summarize(runs, LAYERS, batch=2, warmup_runs=1)
    profile.rows[0].macs, profile.rows[0].kind, profile.rows[0].params = 1234, "3x3 conv", 99
    return profile


def test_the_timeline_travels_only_when_asked_and_gives_the_same_trace():
    profile = _profile()
    assert len(profile_message(profile).timeline) == 0
    message = profile_message(profile, timeline=True)
    assert len(message.timeline) == 3 and message.runtime == "onnxruntime" and message.layers[0].kind == "3x3 conv"
    back = profile_from_message(message)
    direct, relayed = trace_events([("tiny", profile)]), trace_events([("tiny", back)])
    assert relayed["traceEvents"] == direct["traceEvents"]
