"""Repeated runs made into one profile (synthetic runs), and GPU work attributed to nodes (synthetic CUPTI records)."""

from __future__ import annotations

import pytest

from graphgen.profiling.attribution import ApiCall, GpuActivity, NodeSpan, attribute, spans_from_trace
from graphgen.profiling.layermap import KernelOrigin, LayerMap
from graphgen.profiling.summary import ADD_UP_MARGIN, TIMING_LAUNCH, Spread, explain, summarize
from graphgen.profiling.trace import KernelEvent, RunTrace

LAYERS = LayerMap(
    {"conv_a": KernelOrigin(("a", "a_relu"), ("Conv", "Relu")), "conv_b": KernelOrigin(("b",), ("Conv",))}, ()
)


def _run(start: int, a: int, b: int, gap: int = 2) -> RunTrace:
    kernels = [
        KernelEvent("conv_a", "Conv", "CPUExecutionProvider", start + 1, a, 7, 100, 40),
        KernelEvent("conv_b", "Conv", "CPUExecutionProvider", start + 1 + a + gap, b, 7, 100, 0),
        KernelEvent("ReorderOutput", "ReorderOutput", "CPUExecutionProvider", start + 1 + a + b + 2 * gap, 1, 7, 8, 0),
    ]
    return RunTrace(start, a + b + 1 + 3 * gap, kernels)


def test_rows_are_medians_with_a_p10_p90_spread_and_the_total_is_the_median_run():
    runs = [_run(i * 1000, a, 50) for i, a in enumerate([100, 102, 98, 101, 99, 100, 103, 97, 100, 400])]
    profile = summarize(runs, LAYERS, batch=4, warmup_runs=2)
    a, b, reorder = profile.rows
    assert (a.layer, b.layer, reorder.layer) == ("a + a_relu", "b", "[onnxruntime] ReorderOutput")
    assert a.time.median == 100 and a.time.max == 400 and a.time.min == 97
    assert a.time.p10 == pytest.approx(97.9) and a.time.p90 == pytest.approx(132.7)  # numpy's linear percentiles
    assert profile.run == Spread.of([run.dur_us for run in runs]) and profile.run.median == 157
    assert profile.layers_us == 151 and profile.overhead_us == 6 and profile.add_up_error < ADD_UP_MARGIN
    assert a.bytes == 140 and (profile.runs, profile.batch, profile.warmup_runs) == (10, 4, 2)
    assert sum(profile.share(row) for row in profile.rows) == pytest.approx(1.0)
    explain(profile)
    assert profile.notes == []  # adds up, one slowest row
    data = profile.as_dict()
    assert data["spread"] == "p10-p90" and data["rows"][0]["share"] == pytest.approx(100 / 151)


def test_a_profile_that_does_not_add_up_says_so_and_ties_are_named():
    # Whole runs hit by disturbances that land on a different kernel each time: each row's median
    # leaves them out, the median run keeps them.
    runs = [_run(i * 1000, 100 + (300 if i < 3 else 0), 100 + (300 if 3 <= i < 6 else 0)) for i in range(10)]
    profile = summarize(runs, LAYERS, batch=1, warmup_runs=2, timing=TIMING_LAUNCH)
    explain(profile)
    assert profile.add_up_error > ADD_UP_MARGIN
    assert any("runs were disturbed" in note for note in profile.notes)
    assert any("2 rows are as slow as the slowest" in note for note in profile.notes)  # a and b tie
    assert "LAUNCH TIME" in profile.timing_text


def test_gpu_work_goes_to_the_node_that_launched_it():
    # Two runs of two nodes on thread 7; node events in µs since the profiling start (wall clock),
    # CUPTI's clock 5 s ahead of the wall clock.
    start_ns, offset_ns = 1_000_000_000, 5_000_000_000
    events = [
        ("conv_a", 0, 7, 100, 50),
        ("conv_b", 0, 7, 160, 30),
        ("conv_a", 1, 7, 300, 50),
        ("conv_b", 1, 7, 360, 30),
    ]
    spans = spans_from_trace(events, start_ns, offset_ns)
    assert spans[0] == NodeSpan("conv_a", 0, 7, start_ns + offset_ns + 100_000, start_ns + offset_ns + 150_000)
    base = start_ns + offset_ns
    calls = [
        ApiCall(1, 7, base + 110_000, base + 115_000),  # conv_a run 0 launches two kernels
        ApiCall(2, 7, base + 120_000, base + 125_000),
        ApiCall(3, 7, base + 170_000, base + 175_000),  # conv_b run 0
        ApiCall(4, 7, base + 310_000, base + 311_000),  # conv_a run 1
        ApiCall(5, 7, base + 155_000, base + 156_000),  # between nodes: nobody's
        ApiCall(6, 9, base + 365_000, base + 366_000),  # another thread: nobody's
        ApiCall(7, 7, base + 359_500, base + 359_900),  # 500 ns before conv_b run 1's edge: conv_a? no node holds it
        ApiCall(8, 7, base + 360_500, base + 361_000),  # 500 ns inside conv_b run 1: attributed, but ambiguous
    ]
    # GPU work runs later than its launch (queued), on the device's own time.
    activities = [
        GpuActivity(1, base + 400_000, base + 420_000, "gemm"),
        GpuActivity(2, base + 420_000, base + 425_000, "bias"),
        GpuActivity(3, base + 425_000, base + 455_000, "gemm"),
        GpuActivity(4, base + 600_000, base + 640_000, "gemm"),
        GpuActivity(5, base + 455_000, base + 456_000, "memset"),
        GpuActivity(6, base + 640_000, base + 650_000, "gemm"),
        GpuActivity(7, base + 650_000, base + 651_000, "gemm"),
        GpuActivity(8, base + 651_000, base + 661_000, "gemm"),
        GpuActivity(99, base + 700_000, base + 701_000, "no launch record"),
    ]
    result = attribute(spans, calls, activities, tolerance_ns=2000)
    assert result.device_ns == {
        (0, "conv_a"): 25_000,
        (0, "conv_b"): 30_000,
        (1, "conv_a"): 40_000,
        (1, "conv_b"): 10_000,
    }
    assert result.attributed == 5 and result.unattributed == 4 and result.ambiguous == 1
    assert result.unattributed_ns == {0: 1_000, 1: 11_000}  # launched inside a run's span but by no node


def test_time_between_kernels_is_named_as_the_executors_not_as_disturbance():
    runs = [_run(i * 1000, 100, 50, gap=20) for i in range(10)]  # a small model: 60 µs of 211 between kernels
    profile = summarize(runs, LAYERS, batch=1, warmup_runs=2)
    explain(profile)
    assert profile.add_up_error > ADD_UP_MARGIN and profile.between_kernels.median == 60
    assert any("executor between the 3 kernels" in note for note in profile.notes)
    assert not any("disturbed" in note for note in profile.notes)


def test_cupti_records_are_collected_into_calls_and_gpu_activities(monkeypatch):
    """The collector against a stand-in for cupti-python's module (the real one needs a GPU)."""
    import enum
    import sys
    import types
    from types import SimpleNamespace

    from graphgen.profiling import cuda

    class Kind(enum.IntEnum):
        MEMCPY, MEMSET, DRIVER, RUNTIME, CONCURRENT_KERNEL = 1, 2, 4, 5, 10

    calls: list[str] = []
    fake = SimpleNamespace(
        ActivityKind=Kind,
        ActivityThreadIdType=SimpleNamespace(SYSTEM=1),
        set_thread_id_type=lambda kind: calls.append(f"thread id {kind}"),
        activity_disable=lambda kind: calls.append(f"disable {kind.name}"),
        get_timestamp=lambda: 10**12,
    )

    def register(requested, completed):
        calls.append("register")
        fake.completed = completed
        assert requested() == (8 * 1024 * 1024, 0)

    pending: list[SimpleNamespace] = []

    def enable(kind):  # records of the work done while enabled: delivered by the next flush
        calls.append(f"enable {kind.name}")
        pending[:] = [
            SimpleNamespace(kind=Kind.RUNTIME, correlation_id=7, thread_id=42, start=100, end=110),
            SimpleNamespace(kind=Kind.CONCURRENT_KERNEL, correlation_id=7, start=200, end=260, name="sgemm"),
            SimpleNamespace(kind=Kind.MEMSET, correlation_id=8, start=270, end=271),
        ]

    def flush(flag):
        delivered = list(pending)
        pending.clear()
        fake.completed(delivered)

    fake.activity_register_callbacks, fake.activity_flush_all, fake.activity_enable = register, flush, enable
    module = types.ModuleType("cupti")
    module.cupti = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupti", module)
    monkeypatch.setattr(cuda, "_registered", False)
    for _ in range(2):
        with cuda.CuptiCollector() as collector:
            pass
    records = collector.records
    assert calls.count("register") == 1  # once per process
    assert records.calls == [ApiCall(7, 42, 100, 110)]  # the second collector's own records only
    assert records.activities == [GpuActivity(7, 200, 260, "sgemm"), GpuActivity(8, 270, 271, "")]
    assert records.offset_bracket_ns >= 0 and "enable CONCURRENT_KERNEL" in calls and "disable RUNTIME" in calls


def test_launch_times_are_said_in_the_response_and_in_both_tables_headers():
    from graphgen.profiling.inprocess import format_profile
    from graphgen_client.tables import profile_table
    from graphgen_server.frontends.profiles import profile_message

    profile = summarize(
        [_run(i * 1000, 100, 50) for i in range(5)], LAYERS, batch=1, warmup_runs=2, timing=TIMING_LAUNCH
    )
    profile.notes.append("rows are CUDA launch times, not GPU times: cupti-python is not installed")
    message = profile_message(profile)
    assert message.timing == "launch" and "LAUNCH TIME" in message.timing_text
    assert "LAUNCH TIME" in profile_table(message).splitlines()[0]
    assert "LAUNCH TIME" in format_profile(profile, "tiny").splitlines()[0]


def test_gpu_rows_short_of_the_cuda_event_time_are_explained_as_gpu_idle():
    from graphgen.profiling.summary import TIMING_DEVICE

    runs = [_run(i * 1000, 100, 50) for i in range(5)]
    profile = summarize(runs, LAYERS, batch=8, warmup_runs=2, timing=TIMING_DEVICE)
    for row in profile.rows:
        row.device = Spread.of([row.time.median / 2] * 5)  # GPU time: half the launch-side time
    profile.device_run = Spread.of([200.0] * 5)
    explain(profile)
    assert profile.total_us == 200 and profile.layers_us == 75.5
    assert any("CUDA-event run time" in note and "the rest is the GPU idle" in note for note in profile.notes)
    assert not any("disturbed" in note for note in profile.notes)
