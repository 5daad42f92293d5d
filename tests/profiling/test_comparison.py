"""Profiles of several forms of one network compared layer by layer (synthetic, then fp32 against int8)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from graphgen.build import BuildOptions, build, save
from graphgen.profiling.comparison import INSERTED, Form, compare, format_comparison, node_owners
from graphgen.profiling.layermap import KernelOrigin, LayerMap
from graphgen.profiling.session import ModelProfiler
from graphgen.profiling.summary import Spread, summarize
from graphgen.profiling.trace import KernelEvent, RunTrace
from tests.support.int8 import quantize


def _runs(kernels: dict[str, list[int]]) -> list[RunTrace]:
    """Runs of the given kernels (name -> its time in each run), laid end to end."""
    count = len(next(iter(kernels.values())))
    runs = []
    for index in range(count):
        start, cursor, events = index * 10_000, index * 10_000, []
        for name, times in kernels.items():
            events.append(KernelEvent(name, "Op", "CPUExecutionProvider", cursor, times[index], 7, 0, 0))
            cursor += times[index]
        runs.append(RunTrace(start, cursor - start, events))
    return runs


FP32 = LayerMap(
    {
        "conv1": KernelOrigin(("conv1",), ("Conv",)),
        "fused_conv3": KernelOrigin(("conv3", "add", "relu"), ("Conv", "Add", "Relu")),
        "branch": KernelOrigin(("branch1x1",), ("Conv",)),
        "ReorderOutput": KernelOrigin((), ()),
    },
    (),
)
INT8 = LayerMap(
    {
        "conv1_quant": KernelOrigin(("conv1",), ("Conv",)),
        "qconv3": KernelOrigin(("conv3",), ("Conv",)),
        "add": KernelOrigin(("add",), ("Add",)),
        "relu_Q": KernelOrigin(("v_relu_QuantizeLinear",), ("QuantizeLinear",)),
        "folded": KernelOrigin(("reparam",), ("Conv",)),
        "Transpose_token_1": KernelOrigin((), ()),
    },
    (),
)


def _synthetic() -> tuple[Form, Form]:
    fp32 = summarize(
        _runs(
            {"conv1": [100] * 5, "fused_conv3": [400, 410, 390, 400, 405], "branch": [50] * 5, "ReorderOutput": [5] * 5}
        ),
        FP32,
        batch=1,
        warmup_runs=1,
    )
    # In int8 conv3's three parts are three kernels whose slow runs differ: the row's median is the
    # median of each run's sum (100+20+10 = 130 in most runs), not the sum of the three medians.
    int8 = summarize(
        _runs(
            {
                "conv1_quant": [98, 99, 101, 100, 102],
                "qconv3": [100, 100, 300, 100, 100],
                "add": [20, 200, 20, 20, 20],
                "relu_Q": [10, 10, 10, 10, 10],
                "folded": [70] * 5,
                "Transpose_token_1": [30] * 5,
            }
        ),
        INT8,
        batch=1,
        warmup_runs=1,
    )
    order = ("conv1", "conv3", "add", "relu", "branch1x1")
    return Form("fp32", fp32, {}, order), Form("int8", int8, {"v_relu_QuantizeLinear": "relu"}, order)


def test_rows_join_what_each_form_fused_and_sum_each_run_before_the_median():
    comparison = compare(_synthetic())
    rows = {row.layer: row for row in comparison.rows}
    conv3 = rows["conv3 + add + relu"]
    assert conv3.kernels == (1, 3)  # one fused kernel in fp32; QLinearConv, Add and the relu's Q in int8
    assert conv3.times[0] == Spread.of([400, 410, 390, 400, 405])
    assert conv3.times[1] is not None and conv3.times[1].median == 130  # sums per run: 130, 310, 330, 130, 130
    assert conv3.ratio(1) == pytest.approx(130 / 400) and not conv3.tied(1)
    assert rows["conv1"].tied(1) and rows["conv1"].ratio(1) == pytest.approx(100 / 100)
    # Nothing dropped: rows of one form only, and each runtime's own kernels, are shown.
    assert rows["branch1x1"].times[1] is None and rows["branch1x1"].only_in == (0,)
    assert rows["reparam"].times[0] is None and rows["reparam"].only_in == (1,)
    assert rows[INSERTED].kernels == (1, 1) and rows[INSERTED].times[1].median == 30
    for form, profile in enumerate(comparison.profiles):
        assert sum(row.kernels[form] for row in comparison.rows) == len(profile.rows)
    # The largest change against the first form first: conv3 (-270 µs), reparam (+70), branch (-50), …
    assert [row.layer for row in comparison.rows[:3]] == ["conv3 + add + relu", "reparam", "branch1x1"]


def test_the_table_names_forms_ratios_rows_of_one_form_and_totals():
    text = format_comparison(compare(_synthetic()))
    assert "form 0: fp32" in text and "form 1: int8" in text and "1 ÷ 0" in text
    line = next(line for line in text.splitlines() if line.startswith("conv3 + add + relu"))
    assert "0.33×" in line
    assert "≈1.00×" in next(line for line in text.splitlines() if line.startswith("conv1 "))
    assert "only here" in next(line for line in text.splitlines() if line.startswith("reparam"))
    assert "absent" in next(line for line in text.splitlines() if line.startswith("branch1x1"))
    assert "total 1 (int8): median run" in text and "× form 0" in text
    assert "2 rows exist in some forms only" in text


def _qdq_graph() -> onnx.GraphProto:
    weight = helper.make_tensor("w", TensorProto.INT8, [4, 3, 1, 1], [1] * 12)
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("z", TensorProto.INT8, [], [0])
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s", "z"], ["input_q"], name="input_QuantizeLinear"),
        helper.make_node("DequantizeLinear", ["input_q", "s", "z"], ["input_dq"], name="input_DequantizeLinear"),
        helper.make_node("DequantizeLinear", ["w", "s", "z"], ["w_dq"], name="w_DequantizeLinear"),
        helper.make_node("Conv", ["input_dq", "w_dq"], ["c"], name="conv1"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["r_q"], name="relu_QuantizeLinear"),
        helper.make_node("DequantizeLinear", ["r_q", "s", "z"], ["r_dq"], name="relu_DequantizeLinear"),
        helper.make_node("GlobalAveragePool", ["r_dq"], ["out"], name="pool"),
    ]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 1, 1])
    return helper.make_graph(nodes, "qdq", [x], [y], [weight, scale, zero])


def test_quantize_and_dequantize_nodes_belong_to_the_layer_they_quantize_for():
    assert node_owners(_qdq_graph()) == {
        "input_QuantizeLinear": "conv1",  # nothing before it: the layer that reads it
        "input_DequantizeLinear": "conv1",
        "w_DequantizeLinear": "conv1",  # a weight's DQ: its Conv
        "relu_QuantizeLinear": "relu",  # an output's Q: the layer whose output it is
        "relu_DequantizeLinear": "pool",  # an input's DQ: the layer that reads it
    }


@pytest.fixture(scope="module")
def resnet18_forms(tmp_path_factory):
    folder = tmp_path_factory.mktemp("forms")
    fp32 = save(build("resnet18", BuildOptions(resolution=32, num_classes=10)), folder / "fp32.onnx")
    return fp32, quantize(fp32, folder / "int8.onnx", (1, 3, 32, 32))


def _profile(path) -> Form:
    profiler = ModelProfiler(path)
    try:
        session = profiler.build()
        feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
        _, profile = session.measure(feeds, runs=3, warmup_runs=1)
    finally:
        profiler.close()
    return Form.of(path.name, profile, str(path))


def test_fp32_against_int8_names_a_ratio_for_every_convolution(resnet18_forms):
    forms = [_profile(path) for path in resnet18_forms]
    comparison = compare(forms)
    convs = [
        n.name for n in onnx.load(str(resnet18_forms[0]), load_external_data=False).graph.node if n.op_type == "Conv"
    ]
    by_node = {node: row for row in comparison.rows for node in row.nodes}
    assert all(by_node[conv].ratio(1) is not None for conv in convs), "a convolution without a ratio"
    # Q/DQ kernels go to the layers they quantize for, never among the runtime's own kernels.
    int8 = forms[1].profile
    qdq = [row for row in int8.rows if row.kernel_op in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(row.mapped for row in qdq)  # the layer map already names them after their layers
    assert not any(node.endswith(("QuantizeLinear", "DequantizeLinear")) for row in int8.rows for node in row.nodes)
    inserted = next((row for row in comparison.rows if row.layer == INSERTED), None)
    assert (inserted.kernels[1] if inserted else 0) == sum(not row.mapped for row in int8.rows)
    assert sum(row.kernels[1] for row in comparison.rows) == len(int8.rows)
    assert "1 ÷ 0" in format_comparison(comparison)


def test_a_disturbed_profile_makes_every_form_compare_fastest_runs():
    fp32, int8 = _synthetic()
    int8.profile.headline = "min"  # its runs waited for a CPU: rows are fastest runs, and so in every form
    comparison = compare([fp32, int8])
    rows = {row.layer: row for row in comparison.rows}
    assert comparison.headline == "min"
    assert rows["conv3 + add + relu"].ratio(1) == pytest.approx(130 / 390)  # the fastest run of each form
    assert rows["conv1"].tied(1)  # 100 vs 98: within the minimum's 5%
    assert comparison.total(0) == fp32.profile.run.min
    text = format_comparison(comparison)
    assert "0: min µs" in text and "total 1 (int8): fastest run" in text and "≈: within 5%" in text
