"""OpenVINO's per-node performance counters named after graphgen's layers; its precision and threads stated."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from graphgen.build import BuildOptions, build, save
from graphgen.profiling import openvino
from graphgen.profiling.openvino import ExecNode, OpenVinoProfiler, map_exec_nodes
from tests.support.models import built


def _graph():
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["v_conv1"], name="conv1"),
        helper.make_node("Relu", ["v_conv1"], ["v_relu"], name="relu"),
        helper.make_node("Conv", ["v_relu", "w2"], ["v_layer1.10"], name="layer1.10"),
        helper.make_node("Conv", ["v_layer1.10", "w3"], ["v_layer1.1"], name="layer1.1"),
        helper.make_node("Identity", ["v_layer1.1"], ["v_id"], name="identity"),
        helper.make_node("Gemm", ["v_id", "w4"], ["logits"], name="fc"),
    ]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)
    return helper.make_graph(nodes, "g", [x], [y])


def test_executable_nodes_map_to_graphgen_nodes_by_their_original_names():
    nodes = [
        ExecNode("input", "Input", ("input",)),
        ExecNode("conv1.weight", "Const", ("conv1.weight",)),
        ExecNode("input_abcd_acdb_conv1/WithoutBiases", "Reorder", ()),  # OpenVINO's own
        ExecNode("conv1/WithoutBiases", "Convolution", ("conv1/WithoutBiases", "relu")),  # bias and ReLU fused
        ExecNode("layer1.10/WithoutBiases", "Convolution", ("layer1.10/WithoutBiases",)),  # not layer1.1's
        ExecNode("layer1.1/WithoutBiases", "Convolution", ("layer1.1/WithoutBiases",)),
        ExecNode("logits", "FullyConnected", ("logits",)),  # named after the Gemm's output value
    ]
    layer_map = map_exec_nodes(_graph(), nodes)
    assert layer_map.origin("conv1/WithoutBiases").nodes == ("conv1", "relu")
    assert layer_map.origin("conv1/WithoutBiases").op_types == ("Conv", "Relu")
    assert layer_map.origin("layer1.10/WithoutBiases").nodes == ("layer1.10",)
    assert layer_map.origin("layer1.1/WithoutBiases").nodes == ("layer1.1",)
    assert layer_map.origin("logits").nodes == ("fc",)
    assert not layer_map.origin("input_abcd_acdb_conv1/WithoutBiases").mapped
    assert "input" not in layer_map.kernels and "conv1.weight" not in layer_map.kernels  # run nothing
    assert layer_map.unprofiled == ("identity",)  # optimised away: listed, not hidden


needs_openvino = pytest.mark.skipif(
    openvino.unavailable_reason() is not None, reason=str(openvino.unavailable_reason())
)


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    return save(built("resnet50"), tmp_path_factory.mktemp("ov") / "resnet50.onnx")


@needs_openvino
def test_resnet50_on_openvino_maps_its_time_to_graphgen_layers_at_float32_with_one_unpinned_thread(resnet50):
    profiler = OpenVinoProfiler(resnet50, threads=1, precision="f32")
    try:
        feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
        outputs, profile = profiler.measure(feeds, runs=3, warmup_runs=1)
    finally:
        profiler.close()
    settings = profiler.settings
    assert (settings.precision, settings.threads, settings.pinning, settings.streams) == ("f32", 1, False, 1)
    assert settings.device_default  # the plugin's own default is read and stated beside it
    assert outputs[0].shape == (1, 1000)
    mapped = sum(row.time.median for row in profile.rows if row.mapped)
    fraction = mapped / sum(row.time.median for row in profile.rows)
    assert fraction >= 0.95, fraction
    assert any(f"{fraction:.1%} of OpenVINO's node time maps to graphgen layers" in note for note in profile.notes)
    assert any(
        "INFERENCE_PRECISION_HINT f32 (asked for" in note and "1 thread, pinning off" in note for note in profile.notes
    )
    assert profile.runtime == "openvino" and profile.provider == "OpenVINO CPU f32"
    assert all(row.layer.startswith("[openvino] ") for row in profile.rows if not row.mapped)
    # Every convolution is named, joined with graphgen stats (MACs), and ReLUs and residual adds fused in.
    rows = {row.layer: row for row in profile.rows}
    assert rows["layer1.0.conv3 + layer1.0.add + layer1.0.relu_2"].kind == "1x1 conv"
    assert sum(row.macs for row in profile.rows) == profiler.static.stats[1].macs
    assert len(profile.timeline) == 3 and all(len(run.spans) == len(profile.rows) for run in profile.timeline)


@needs_openvino
def test_the_plugins_default_precision_is_said_when_asked_for(tmp_path):
    path = save(build("resnet18", BuildOptions(resolution=32, num_classes=10)), tmp_path / "r18.onnx")
    profiler = OpenVinoProfiler(path, threads=1, precision="default")
    try:
        _, profile = profiler.measure({"input": np.zeros((1, 3, 32, 32), np.float32)}, runs=1, warmup_runs=0)
    finally:
        profiler.close()
    assert profiler.settings.precision == profiler.settings.device_default
    assert any("(the plugin's default;" in note for note in profile.notes)
    with pytest.raises(ValueError, match="precision must be one of"):
        OpenVinoProfiler(path, precision="int4")
