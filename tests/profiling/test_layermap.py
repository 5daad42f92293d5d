"""onnxruntime's kernels are named after graphgen's layers; traces are read into rows that add up."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest

from graphgen.profiling.layermap import map_layers
from graphgen.profiling.summary import summarize
from graphgen.profiling.trace import read_runs
from tests.support.server import add_model

LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,  # NCHWc layout, Conv+Add+ReLU fused, reorders inserted
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,  # FusedConv keeps the Conv's name
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    return {
        "resnet18": add_model(repo, "resnet18", resolution=64, num_classes=10),
        "lite0": add_model(repo, "efficientnet_lite0", resolution=64, num_classes=10),
    }


def _optimised(path, level, tmp_path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = LEVELS[level]
    options.optimized_model_filepath = str(tmp_path / f"optimised-{level}.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath, load_external_data=False).graph


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", ["resnet18", "lite0"])
def test_every_graphgen_node_is_in_exactly_one_kernel(models, name, level, tmp_path):
    original = onnx.load(models[name], load_external_data=False).graph
    optimised = _optimised(models[name], level, tmp_path)
    layer_map = map_layers(original, optimised)
    covered = [node for origin in layer_map.kernels.values() for node in origin.nodes]
    assert len(covered) == len(set(covered))
    assert set(covered) | set(layer_map.unprofiled) == {n.name for n in original.node}
    assert not layer_map.unprofiled  # these graphs lose no node to the optimiser
    unmapped = {k.op_type for k in optimised.node if not layer_map.origin(k.name).mapped}
    assert unmapped <= {"ReorderInput", "ReorderOutput"}  # only onnxruntime's own layout conversions


@pytest.mark.parametrize("architecture", ["efficientnet_b0", "googlenet", "seresnet50"])
def test_other_families_map_completely(architecture, tmp_path):
    """SiLU fused into QuickGelu, squeeze-and-excitation, inception branches: every node in one kernel."""

    path = add_model(tmp_path, architecture, resolution=96 if architecture != "googlenet" else 128, num_classes=10)
    original = onnx.load(path, load_external_data=False).graph
    layer_map = map_layers(original, _optimised(path, "all", tmp_path))
    covered = [node for origin in layer_map.kernels.values() for node in origin.nodes]
    assert sorted(covered) == sorted(n.name for n in original.node if n.op_type != "Constant")
    silu = [o for o in layer_map.kernels.values() if o.op_types == ("Sigmoid", "Mul")]
    assert architecture != "efficientnet_b0" or silu  # onnxruntime's QuickGelu computes x * sigmoid(x)


def test_nchwc_fusions_are_attributed_to_the_layers_they_compute(models, tmp_path):
    original = onnx.load(models["resnet18"], load_external_data=False).graph
    layer_map = map_layers(original, _optimised(models["resnet18"], "all", tmp_path))
    layers = {origin.layer for origin in layer_map.kernels.values()}
    assert "conv1 + relu" in layers  # a kernel named after the ReLU's output computes the Conv before it
    assert "layer1.0.conv2 + layer1.0.add + layer1.0.relu_1" in layers  # Conv with the residual sum and ReLU
    # Where two Convs meet in an Add, the Add goes to the kernel that reads the other's result.
    assert "layer2.0.conv2 + layer2.0.add + layer2.0.relu_1" in layers
    assert "layer2.0.downsample.0" in layers
    assert "ReorderOutput" in {k for k, o in layer_map.kernels.items() if not o.mapped}


def test_kernels_keeping_graphgen_names_map_to_themselves(models, tmp_path):
    original = onnx.load(models["lite0"], load_external_data=False).graph
    optimised = _optimised(models["lite0"], "extended", tmp_path)
    layer_map = map_layers(original, optimised)
    for kernel in optimised.node:
        assert layer_map.origin(kernel.name).nodes[0] == kernel.name
    assert layer_map.origin("_blocks.1._depthwise_conv").nodes == ("_blocks.1._depthwise_conv", "_blocks.1._relu6_1")


def _event(name, ts, dur, cat="Node", **args):
    return {"cat": cat, "name": name, "ts": ts, "dur": dur, "args": args}


def test_runs_are_read_in_order_with_their_kernels_and_inserted_kernels_named(models, tmp_path):
    original = onnx.load(models["resnet18"], load_external_data=False).graph
    layer_map = map_layers(original, _optimised(models["resnet18"], "all", tmp_path))
    kernels = list(layer_map.kernels)
    cpu = "CPUExecutionProvider"
    events = [
        _event("model_run", 0, 100, cat="Session"),
        _event(kernels[0] + "_kernel_time", 10, 50, provider=cpu, op_name="Conv", activation_size="8", output_size="4"),
        _event("model_run", 1000, 400, cat="Session"),
        _event("ReorderOutput_kernel_time", 1300, 20, provider=cpu, op_name="ReorderOutput"),
        _event(kernels[0] + "_kernel_time", 1010, 300, provider=cpu, op_name="Conv"),
        _event(kernels[1] + "_fence_before", 1005, 1),  # not a kernel event
    ]
    runs = read_runs(events)
    assert [(run.start_us, run.dur_us) for run in runs] == [(0, 100), (1000, 400)]
    assert [k.kernel for k in runs[1].kernels] == [kernels[0], "ReorderOutput"]
    assert (runs[0].kernels[0].io_bytes, runs[0].kernels[0].param_bytes) == (12, 0)
    profile = summarize(runs[1:], layer_map, batch=1, warmup_runs=1)
    assert profile.rows[0].layer == "conv1 + relu" and profile.rows[0].op_types == ("Conv", "Relu")
    assert profile.rows[1].layer == "[onnxruntime] ReorderOutput" and not profile.rows[1].mapped
    assert (profile.run.median, profile.layers_us, profile.overhead_us) == (400, 320, 80)
    assert profile.provider == cpu
    with pytest.raises(ValueError, match="model_run"):
        read_runs(events[1:2])


def test_an_int8_models_quantize_and_dequantize_kernels_go_to_the_layers_they_surround(models, tmp_path):
    """QDQ: every kernel is named after graphgen layers (Q/DQ folded into theirs), none after a Q/DQ node."""
    from tests.support.int8 import quantize

    int8 = quantize(models["resnet18"], tmp_path / "int8.onnx", (1, 3, 64, 64))
    original = onnx.load(int8, load_external_data=False).graph
    layer_map = map_layers(original, _optimised(int8, "all", tmp_path))
    graphgen_nodes = {n.name for n in onnx.load(models["resnet18"], load_external_data=False).graph.node}
    named = {node for origin in layer_map.kernels.values() for node in origin.nodes}
    assert named <= graphgen_nodes  # no QuantizeLinear/DequantizeLinear of their own
    assert {"conv1", "layer1.0.conv1", "layer4.1.add", "fc"} <= named
    qdq = {n.name for n in original.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    assert qdq and not qdq & set(layer_map.unprofiled)
    # signed int8 leaves layer1.0.conv1 in float (its input feeds the residual sum too): the weight's
    # DequantizeLinear runs at every inference, as a kernel of its own, and counts to that convolution
    assert layer_map.origin("layer1.0.conv1.weight_DequantizeLinear").nodes == ("layer1.0.conv1",)
