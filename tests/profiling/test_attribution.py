"""GPU work given to the run and node that launched it (graphgen/profiling/attribution.py, synthetic CUPTI records)."""

from __future__ import annotations

from graphgen.profiling.attribution import (
    INPUT_COPY,
    OUTPUT_COPY,
    ApiCall,
    GpuActivity,
    NodeSpan,
    RunWindow,
    attribute,
    spans_from_trace,
)

# Two runs of two nodes on thread 7; node events in µs since the profiling start (wall clock), CUPTI's
# clock 5 s ahead of the wall clock.
START_NS, OFFSET_NS = 1_000_000_000, 5_000_000_000
BASE = START_NS + OFFSET_NS
EVENTS = [("conv_a", 0, 7, 100, 50), ("conv_b", 0, 7, 160, 30), ("conv_a", 1, 7, 300, 50), ("conv_b", 1, 7, 360, 30)]
WINDOWS = [RunWindow(0, 7, BASE + 90_000, BASE + 200_000), RunWindow(1, 7, BASE + 290_000, BASE + 400_000)]


def _us(value: float) -> int:
    return BASE + int(value * 1000)


def test_gpu_work_goes_to_the_node_that_launched_it():
    spans = spans_from_trace(EVENTS, START_NS, OFFSET_NS)
    assert spans[0] == NodeSpan("conv_a", 0, 7, _us(100), _us(150))
    calls = [
        ApiCall(1, 7, _us(110), _us(115)),  # conv_a run 0 launches two kernels
        ApiCall(2, 7, _us(120), _us(125)),
        ApiCall(3, 7, _us(170), _us(175)),  # conv_b run 0
        ApiCall(4, 7, _us(310), _us(311)),  # conv_a run 1
        ApiCall(5, 7, _us(155), _us(156)),  # between nodes, not a copy: the run's, nobody's row
        ApiCall(6, 9, _us(365), _us(366)),  # another thread (a serving session): not the profile's
        ApiCall(8, 7, _us(360.5), _us(361)),  # 500 ns inside conv_b run 1: attributed, but ambiguous
        ApiCall(9, 7, _us(500), _us(501)),  # our thread, after the last run: not the profile's
    ]
    # GPU work runs later than its launch (queued), on the device's own time.
    activities = [
        GpuActivity(1, _us(400), _us(420), "gemm"),
        GpuActivity(2, _us(420), _us(425), "bias"),
        GpuActivity(3, _us(425), _us(455), "gemm"),
        GpuActivity(4, _us(600), _us(640), "gemm"),
        GpuActivity(5, _us(455), _us(456), "memset", "memset"),
        GpuActivity(6, _us(640), _us(650), "gemm"),
        GpuActivity(8, _us(651), _us(661), "gemm"),
        GpuActivity(9, _us(700), _us(705), "gemm"),
        GpuActivity(99, _us(800), _us(801), "no launch record"),
    ]
    result = attribute(spans, WINDOWS, calls, activities)
    assert result.device_ns == {
        (0, "conv_a"): 25_000,
        (0, "conv_b"): 30_000,
        (1, "conv_a"): 40_000,
        (1, "conv_b"): 10_000,
    }
    assert result.attributed == 5 and result.unattributed == 1 and result.ambiguous == 1
    assert result.unattributed_ns == {0: 1_000}
    assert (result.other, result.other_ns, result.unlaunched) == (3, 16_000, 1)  # thread 9, after the runs, no call
    # Run 0's GPU work: 400–456 µs, all busy; run 1's: 600–661 µs, idle 640–651 (thread 9's work is not ours).
    assert result.span_ns == {0: 56_000, 1: 61_000} and result.busy_ns == {0: 56_000, 1: 50_000}


def test_a_launch_in_a_nodes_last_floored_microsecond_is_the_nodes():
    # onnxruntime floors ts and dur: the node truly ran 100.9–151.8 µs, the trace says ts 100, dur 50.
    spans = spans_from_trace([("conv_a", 0, 7, 100, 50), ("conv_b", 0, 7, 153, 10)], START_NS, OFFSET_NS)
    calls = [ApiCall(1, 7, _us(151.5), _us(151.7)), ApiCall(2, 7, _us(153.2), _us(153.4))]
    activities = [GpuActivity(1, _us(160), _us(170), "gemm"), GpuActivity(2, _us(170), _us(172), "relu")]
    result = attribute(spans, [RunWindow(0, 7, _us(90), _us(200))], calls, activities)
    assert result.device_ns == {(0, "conv_a"): 10_000, (0, "conv_b"): 2_000}
    assert result.unattributed == 0 and result.ambiguous == 2  # both within 1 µs of an edge: counted as such


def test_the_next_node_wins_once_it_has_started():
    # A floored end that reaches past the next node's start: the later node, started, holds the launch.
    spans = spans_from_trace([("a", 0, 7, 100, 50), ("b", 0, 7, 151, 10)], START_NS, OFFSET_NS)
    calls = [ApiCall(1, 7, _us(151.5), _us(151.6))]
    result = attribute(spans, [RunWindow(0, 7, _us(90), _us(200))], calls, [GpuActivity(1, _us(160), _us(161))])
    assert result.device_ns == {(0, "b"): 1_000}


def test_input_and_output_copies_outside_the_nodes_are_rows_of_their_own():
    spans = spans_from_trace(EVENTS[:2], START_NS, OFFSET_NS)
    calls = [
        ApiCall(1, 7, _us(92), _us(99)),  # cudaMemcpyAsync of the input, before the first node
        ApiCall(2, 7, _us(110), _us(111)),
        ApiCall(3, 7, _us(195), _us(199)),  # the output's copy, after the last node
    ]
    activities = [
        GpuActivity(1, _us(95), _us(98), "HTOD", "memcpy", "HTOD"),
        GpuActivity(2, _us(112), _us(180), "gemm"),
        GpuActivity(3, _us(196), _us(197), "DTOH", "memcpy", "DTOH"),
    ]
    result = attribute(spans, WINDOWS[:1], calls, activities)
    assert result.device_ns == {(0, INPUT_COPY): 3_000, (0, "conv_a"): 68_000, (0, OUTPUT_COPY): 1_000}
    assert result.launch_ns == {(0, INPUT_COPY): 7_000, (0, OUTPUT_COPY): 4_000}  # the host's time in the calls
    assert result.unattributed == 0 and result.span_ns == {0: 102_000} and result.busy_ns == {0: 72_000}


def test_serving_launches_during_a_profile_are_counted_apart():
    # A serving session on thread 11 launches inside the profile's run window and inside a node's span.
    spans = spans_from_trace(EVENTS[:2], START_NS, OFFSET_NS)
    calls = [ApiCall(1, 7, _us(110), _us(111)), ApiCall(2, 11, _us(112), _us(113)), ApiCall(3, 11, _us(170), _us(171))]
    activities = [
        GpuActivity(1, _us(115), _us(130), "gemm"),
        GpuActivity(2, _us(130), _us(150), "serving gemm"),
        GpuActivity(3, _us(150), _us(151), "serving copy", "memcpy", "HTOD"),
    ]
    result = attribute(spans, WINDOWS[:1], calls, activities)
    assert result.device_ns == {(0, "conv_a"): 15_000}
    assert (result.other, result.other_ns) == (2, 21_000) and result.span_ns == {0: 15_000}


def test_the_clock_offsets_bracket_widens_the_spans_both_ways():
    # Spans read on a clock that may be 0.5 µs off CUPTI's: a launch 0.3 µs before a node's start or 0.3 µs past
    # its widened end may be the node's.
    spans = spans_from_trace([("a", 0, 7, 100, 50)], START_NS, OFFSET_NS)
    calls = [ApiCall(1, 7, _us(99.7), _us(99.8)), ApiCall(2, 7, _us(152.3), _us(152.4))]
    activities = [GpuActivity(1, _us(160), _us(161)), GpuActivity(2, _us(161), _us(163))]
    window = [RunWindow(0, 7, _us(90), _us(200))]
    assert attribute(spans, window, calls, activities).device_ns == {}
    result = attribute(spans, window, calls, activities, slack_ns=500)
    assert result.device_ns == {(0, "a"): 3_000} and result.ambiguous == 2
