"""``--functions``: every block an ONNX local function, equivalent to the flat graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from graphgen.build import BuildOptions, save
from graphgen.cli import main
from graphgen.onnxscript_api import CLASS_HIERARCHY, NAME_SCOPES
from graphgen.passes.inline import inline_functions
from graphgen.passes.outline import BLOCKS_DOMAIN, outline_blocks
from graphgen.stats import layer_stats
from tests.support.models import built

# One architecture per kind of block: basic residual, inverted residual with ReLU6 constants,
# MBConv with squeeze-excitation, Inception modules, a stage written as a plain module (WRN's
# Group), and RepVGG folded by graphgen convert's pass (its new convs carry no module metadata).
FAMILIES = ["resnet18", "mobilenet_v2", "efficientnet_b0", "inception_v3", "wrn28_10", "repvgg_a0"]


def _run(ort_cpu, model: ir.Model, path, x: np.ndarray) -> list[np.ndarray]:
    save(model, path)
    return ort_cpu(path).run(None, {"input": x})


@pytest.mark.parametrize("name", FAMILIES)
def test_outlined_model_runs_like_the_flat_one(name, tmp_path, ort_cpu):
    flat = built(name, BuildOptions(batch=1))
    if name.startswith("repvgg"):
        from graphgen.passes.fold_repvgg import fold_repvgg

        flat = fold_repvgg(flat).model
    result = outline_blocks(flat)
    assert result.rewrites > 0 and result.model.functions
    if name.startswith("repvgg"):  # each block: the folded conv and its ReLU (then timm's ClassifierHead)
        calls = [node for node in result.model.graph if node.op_type.startswith("RepVggBlock")]
        assert len(calls) == sum(node.op_type == "Relu" for node in flat.graph)
        assert all(len(result.model.functions[call.op_identifier()]) == 2 for call in calls)
    assert not any(node.domain == BLOCKS_DOMAIN for node in flat.graph)  # the input is untouched

    resolution = flat.graph.inputs[0].shape[2]
    x = np.random.default_rng(0).standard_normal((1, 3, resolution, resolution), dtype=np.float32)
    expected = _run(ort_cpu, flat, tmp_path / "flat.onnx", x)
    actual = _run(ort_cpu, result.model, tmp_path / "functions.onnx", x)
    onnx.checker.check_model(onnx.load(str(tmp_path / "functions.onnx")), full_check=True)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)


def test_resnet152_reads_as_a_chain_of_blocks(tmp_path):
    model = built("resnet152", BuildOptions(functions=True))
    graph = model.graph
    blocks = [f"layer{s + 1}.{b}" for s, n in enumerate((3, 8, 36, 3)) for b in range(n)]
    assert [node.name for node in graph] == ["conv1", "relu", "maxpool", *blocks, "avgpool", "flatten", "fc"]
    calls = [node for node in graph if node.domain == BLOCKS_DOMAIN]
    assert {node.op_type for node in calls} == {f"Bottleneck_layer{s}_{b}" for s in range(1, 5) for b in (0, 1)}
    for previous, call in zip([graph.node(2).outputs[0], *(c.outputs[0] for c in calls)], calls):
        assert call.inputs[0] is previous  # each block reads the one before: a chain
    # A stage's first block (projection, maybe strided) differs from the rest: two functions per stage,
    # each named after its first call site, none an overload (onnxslim keys functions by name alone).
    assert sorted(model.functions) == sorted(
        (BLOCKS_DOMAIN, f"Bottleneck_layer{s}_{b}", "") for s in range(1, 5) for b in (0, 1)
    )
    assert [node.op_type for node in calls[:4]] == [
        "Bottleneck_layer1_0",
        *["Bottleneck_layer1_1"] * 2,
        "Bottleneck_layer2_0",
    ]
    assert graph.node("layer3.7").doc_string.startswith("Bottleneck layer3.7: Conv×3, Relu×3, Add")
    assert graph.node("layer3.7").inputs[1].name == "layer3.7.conv1.weight"  # weights stay initializers

    # What Netron draws when a block is opened: named nodes, and a shape on every edge inside it.
    save(model, tmp_path / "resnet152.onnx")
    proto = onnx.load(str(tmp_path / "resnet152.onnx"), load_external_data=False)
    function = next(f for f in proto.functions if f.name == "Bottleneck_layer3_1")
    assert [node.name for node in function.node] == ["conv1", "relu", "conv2", "relu_1", "conv3", "add", "relu_2"]
    # descriptions inside are relative to the block, as the shared body serves every call
    assert function.node[2].doc_string == "Conv2d conv2 (BatchNorm2d bn2 folded in)"
    assert function.node[5].doc_string == "Add in Bottleneck"
    assert list(function.input) == ["x", *(f"conv{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias"))]
    assert list(function.output) == ["y"]
    typed = {info.name for info in function.value_info}
    assert all(output in typed for node in function.node for output in node.output)
    shapes = {
        info.name: [d.dim_value or d.dim_param for d in info.type.tensor_type.shape.dim] for info in function.value_info
    }
    assert shapes["x"] == ["batch", 1024, 14, 14]


@pytest.mark.parametrize("name", ["resnet50", "efficientnet_b0"])
def test_inlining_restores_the_flat_graph(name):
    flat = built(name)
    restored = inline_functions(outline_blocks(flat).model).model
    assert not restored.functions and BLOCKS_DOMAIN not in restored.opset_imports
    pairs = list(zip(restored.graph, flat.graph, strict=True))
    assert all(a.name == b.name and a.op_type == b.op_type for a, b in pairs)
    assert all(dict(a.metadata_props) == dict(b.metadata_props) for a, b in pairs)
    assert all(a.doc_string == b.doc_string for a, b in pairs)
    assert all(
        [v.name for v in a.inputs[1:]] == [v.name for v in b.inputs[1:]] for a, b in pairs if a.op_type == "Conv"
    )
    assert sorted(restored.graph.initializers) == sorted(flat.graph.initializers)
    # so statistics of a --functions model are those of the flat one, under the same layer names
    a, b = layer_stats(outline_blocks(flat).model), layer_stats(flat)
    assert [(r.name, r.params, r.macs, r.activations) for r in a.rows] == [
        (r.name, r.params, r.macs, r.activations) for r in b.rows
    ]


def _node(op: str, inputs: list[ir.Value], classes: list[str], scopes: list[str]) -> ir.Node:
    node = ir.Node("", op, inputs, name=".".join(scopes[1:]) or op)
    node.metadata_props[CLASS_HIERARCHY] = str(classes)
    node.metadata_props[NAME_SCOPES] = str(scopes)
    node.outputs[0].shape, node.outputs[0].type = ir.Shape([1, 4]), ir.TensorType(ir.DataType.FLOAT)
    return node


def test_a_block_the_data_leaves_and_reenters_stays_flat():
    x = ir.Value(name="x", shape=ir.Shape([1, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    # block "tangled": relu -> (root's neg) -> add; outlining it would need neg inside and outside
    relu = _node("Relu", [x], ["Net", "Tangled", "ReLU"], ["", "tangled", "relu"])
    neg = _node("Neg", [relu.outputs[0]], ["Net"], [""])
    add = _node("Add", [relu.outputs[0], neg.outputs[0]], ["Net", "Tangled"], ["", "tangled"])
    # block "plain": two nodes read from one input, a proper block
    sigmoid = _node("Sigmoid", [add.outputs[0]], ["Net", "Plain", "Sigmoid"], ["", "plain", "gate"])
    mul = _node("Mul", [add.outputs[0], sigmoid.outputs[0]], ["Net", "Plain"], ["", "plain"])
    graph = ir.Graph([x], [mul.outputs[0]], nodes=[relu, neg, add, sigmoid, mul], opset_imports={"": 21}, name="net")
    result = outline_blocks(ir.Model(graph, ir_version=10))
    assert result.rewrites == 1
    assert [(n.op_type, n.name) for n in result.model.graph] == [
        ("Relu", "tangled.relu"),
        ("Neg", "Neg"),
        ("Add", "tangled"),
        ("Plain", "plain"),
    ]
    onnx.checker.check_model(ir.serde.serialize_model(result.model), full_check=True)


def test_cli_build_functions_then_stats(tmp_path, capsys):
    path = tmp_path / "resnet18.onnx"
    assert main(["build", "resnet18", "--functions", "-o", str(path)]) == 0
    assert "14 nodes" in capsys.readouterr().out  # stem, 8 blocks, head
    assert main(["stats", str(path)]) == 0
    table = capsys.readouterr().out
    assert "layer4.1.conv2" in table and "11,689,512 parameters" in table


def test_every_node_says_which_module_and_block_emitted_it():
    graph = built("resnet50").graph
    described = {node.name: node.doc_string for node in graph}
    assert (
        described["layer3.1.conv2"]
        == "Conv2d layer3.1.conv2 (BatchNorm2d layer3.1.bn2 folded in), in Bottleneck layer3.1"
    )
    assert described["layer3.1.add"] == "Add in Bottleneck layer3.1"
    assert described["fc"] == "Linear fc"
    assert all(described.values())


def test_resnet50_functions_survive_onnxslim(tmp_path, ort_cpu):
    """Uniquely named functions: onnxslim (which keys functions by name) merges none, onnxruntime runs it."""
    onnxslim = pytest.importorskip("onnxslim")
    path = save(built("resnet50", BuildOptions(batch=1, resolution=64, functions=True)), tmp_path / "r50.onnx")
    proto = onnx.load(str(path))
    names = [function.name for function in proto.functions]
    assert len(names) == len(set(names)) == 8 and not any(function.overload for function in proto.functions)
    slim = onnxslim.slim(proto)
    assert sorted(function.name for function in slim.functions) == sorted(names)
    onnx.save(slim, str(tmp_path / "slim.onnx"))
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    expected = ort_cpu(path).run(None, {"input": x})[0]
    np.testing.assert_allclose(
        ort_cpu(tmp_path / "slim.onnx").run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-5
    )


def test_inlining_flattens_any_local_function(ort_cpu, tmp_path):
    """A function graphgen did not write (another domain, nested calls) is inlined too."""
    x = ir.Value(name="input", shape=ir.Shape([1, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    inner_in = ir.Value(name="a", shape=ir.Shape([1, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    relu = ir.node("Relu", [inner_in])
    inner = ir.Function(
        "custom",
        "Inner",
        "",
        graph=ir.Graph([inner_in], relu.outputs, nodes=[relu], opset_imports={"": 21}),
        attributes=[],
    )
    outer_in = ir.Value(name="b", shape=ir.Shape([1, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    call_inner = ir.node("Inner", [outer_in], domain="custom")
    neg = ir.node("Neg", call_inner.outputs)
    outer_graph = ir.Graph([outer_in], neg.outputs, nodes=[call_inner, neg], opset_imports={"": 21, "custom": 1})
    outer = ir.Function("custom", "Outer", "", graph=outer_graph, attributes=[])
    call = ir.node("Outer", [x], domain="custom")
    call.outputs[0].name = "out"
    graph = ir.Graph([x], call.outputs, nodes=[call], opset_imports={"": 21, "custom": 1})
    model = ir.Model(graph, ir_version=10, functions=[inner, outer])
    result = inline_functions(model)
    assert result.rewrites == 1 and model.functions  # the input keeps its functions
    flat = result.model
    assert not flat.functions and "custom" not in flat.opset_imports
    assert [node.op_type for node in flat.graph] == ["Relu", "Neg"]
    values = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    save(flat, tmp_path / "flat.onnx")
    np.testing.assert_array_equal(
        ort_cpu(tmp_path / "flat.onnx").run(None, {"input": values})[0], -np.maximum(values, 0)
    )


def test_convert_inline_makes_a_functions_model_flat(capsys, tmp_path):
    """``graphgen convert --inline``: what runtimes without local functions (OpenVINO) load."""
    source, target = tmp_path / "functions.onnx", tmp_path / "flat.onnx"
    assert main(["build", "mobilenet_v2", "--functions", "--batch", "1", "--resolution", "64", "-o", str(source)]) == 0
    assert main(["convert", str(source), "-o", str(target), "--inline", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "inline: 19 function call(s) inlined" in out and "verify: logits" in out and ": ok" in out
    proto = onnx.load(str(target), load_external_data=False)
    assert not proto.functions and all(node.domain == "" for node in proto.graph.node)
    assert [node.name for node in proto.graph.node] == [node.name for node in built("mobilenet_v2").graph]
    assert main(["convert", str(target), "-o", str(tmp_path / "again.onnx"), "--inline"]) == 0
    assert "inline: found no local functions; nothing changed" in capsys.readouterr().out


def test_convert_warns_that_passes_do_not_see_inside_functions(capsys, tmp_path):
    source = tmp_path / "functions.onnx"
    assert (
        main(
            ["build", "repvgg_a0", "--keep-bn", "--functions", "--batch", "1", "--resolution", "64", "-o", str(source)]
        )
        == 0
    )
    assert main(["convert", str(source), "-o", str(tmp_path / "out.onnx"), "--fold-bn"]) == 0
    assert "local function(s) whose nodes the passes do not see; add --inline" in capsys.readouterr().err
    assert main(["convert", str(source), "-o", str(tmp_path / "flat.onnx"), "--inline", "--fold-bn"]) == 0
    captured = capsys.readouterr()
    assert (
        "warning" not in captured.err
        and "fold-bn: 44 BatchNormalization(s) and constant scale(s) folded" in captured.out
    )
