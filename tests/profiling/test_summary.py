"""Repeated runs made into one profile (synthetic runs); GPU work attributed to nodes is in test_attribution.py."""

from __future__ import annotations

import pytest

from graphgen.profiling.layermap import KernelOrigin, LayerMap
from graphgen.profiling.summary import ADD_UP_MARGIN, TIMING_DEVICE, TIMING_LAUNCH, Spread, explain, summarize
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


def test_time_between_kernels_is_named_as_the_executors_not_as_disturbance():
    runs = [_run(i * 1000, 100, 50, gap=20) for i in range(10)]  # a small model: 60 µs of 211 between kernels
    profile = summarize(runs, LAYERS, batch=1, warmup_runs=2)
    explain(profile)
    assert profile.add_up_error > ADD_UP_MARGIN and profile.between_kernels.median == 60
    assert any("executor between the 3 kernels" in note for note in profile.notes)
    assert not any("disturbed" in note for note in profile.notes)


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


def test_gpu_rows_short_of_the_cupti_run_span_are_explained_as_gpu_idle():
    from graphgen.profiling.summary import TIMING_DEVICE

    runs = [_run(i * 1000, 100, 50) for i in range(5)]
    profile = summarize(runs, LAYERS, batch=8, warmup_runs=2, timing=TIMING_DEVICE)
    for row in profile.rows:
        row.device = Spread.of([row.time.median / 2] * 5)  # GPU time: half the launch-side time
    profile.device_run = Spread.of([200.0] * 5)
    profile.device_busy = Spread.of([80.0] * 5)
    profile.event_run = Spread.of([900.0] * 5)  # host-bounded: never the total
    explain(profile)
    assert profile.total_us == 200 and profile.layers_us == 75.5
    (note,) = [note for note in profile.notes if "GPU run span (CUPTI)" in note]
    assert "the rest is the GPU idle" in note and "120 µs per run" in note
    assert not any("disturbed" in note for note in profile.notes)


def test_rows_are_fastest_runs_where_most_runs_waited_for_a_cpu():
    runs = [_run(i * 1000, a, 50) for i, a in enumerate([100, 102, 98, 101, 99, 100, 103, 97, 100, 400])]
    quiet = summarize(runs, LAYERS, batch=1, warmup_runs=2)
    quiet.cpu_waits = [0.01] * 9 + [0.5]  # one disturbed run: medians stay, and that run is said
    explain(quiet)
    assert quiet.headline == "median" and quiet.layers_us == 151
    assert any("1 of 10 runs were disturbed" in note for note in quiet.notes)
    busy = summarize(runs, LAYERS, batch=1, warmup_runs=2)
    busy.cpu_waits = [0.6] * 8 + [0.02] * 2
    explain(busy)
    a = busy.rows[0]
    assert busy.headline == "min" and busy.figure(a) == 97 and busy.layers_us == 97 + 50 + 1
    assert busy.total_us == busy.run.min and busy.run_name == "fastest whole run"
    assert any("8 of 10 runs were disturbed" in note and "fastest run" in note for note in busy.notes)
    assert busy.share(a) == pytest.approx(97 / 148)
    gpu = summarize(runs, LAYERS, batch=1, warmup_runs=2, timing=TIMING_DEVICE)
    gpu.cpu_waits = [0.6] * 10
    explain(gpu)
    assert gpu.headline == "median"  # GPU times are not the host threads' to lose
