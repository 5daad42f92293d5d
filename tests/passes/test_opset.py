"""``--opset N``: the pass that writes a model at opset 13..21 of the default domain, on small graphs.

Every family's build at opsets 13 and 17 against opset 21 is in tests/builder/test_tools_acceptance.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from graphgen.build import BuildOptions, build, save
from graphgen.passes.opset import ConvertOpsetPass, OpsetError, convert_opset
from graphgen.passes.outline import BLOCKS_DOMAIN

FLOAT = ir.TensorType(ir.DataType.FLOAT)


def _model(nodes: list[ir.Node], x: ir.Value, opset: int, initializers=(), shapes=((),)) -> ir.Model:
    for index, (output, shape) in enumerate(zip(nodes[-1].outputs, shapes, strict=True)):
        output.name, output.type, output.shape = f"out{index}", x.type, ir.Shape(shape)
    graph = ir.Graph(
        [x], list(nodes[-1].outputs), nodes=nodes, initializers=initializers, opset_imports={"": opset}, name="g"
    )
    return ir.Model(graph, ir_version=10)


def _runs_equal(ort_cpu, tmp_path, original: ir.Model, converted: ir.Model, x: np.ndarray) -> None:
    paths = [save(model, tmp_path / f"{name}.onnx") for name, model in (("a", original), ("b", converted))]
    onnx.checker.check_model(onnx.load(str(paths[1])), full_check=True)
    expected, actual = (ort_cpu(path).run(None, {"x": x}) for path in paths)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(a, e)


def test_reduction_axes_move_between_input_and_attribute(ort_cpu, tmp_path):
    x = ir.Value(name="x", shape=ir.Shape([2, 3, 4]), type=FLOAT)
    axes = ir.Value(name="axes", const_value=ir.Tensor(np.array([1, 2], np.int64)))
    axes.shape, axes.type = ir.Shape([2]), ir.TensorType(ir.DataType.INT64)
    mean = ir.node("ReduceMean", [x, axes], {"keepdims": 0}, name="mean")
    model = _model([mean], x, 21, [axes], shapes=[[2]])
    data = np.random.default_rng(0).standard_normal((2, 3, 4), dtype=np.float32)

    at17 = convert_opset(model, 17).model
    node = next(iter(at17.graph))
    assert len(node.inputs) == 1 and list(node.attributes["axes"].as_ints()) == [1, 2]
    assert len(mean.inputs) == 2 and "axes" not in mean.attributes  # the input model is untouched
    _runs_equal(ort_cpu, tmp_path, model, at17, data)

    back = convert_opset(at17, 18).model
    node = next(iter(back.graph))
    assert "axes" not in node.attributes and list(node.inputs[1].const_value.numpy()) == [1, 2]
    _runs_equal(ort_cpu, tmp_path, model, back, data)


def test_split_by_count_gets_its_sizes_below_18(ort_cpu, tmp_path):
    x = ir.Value(name="x", shape=ir.Shape([1, 7]), type=FLOAT)
    split = ir.node("Split", [x], {"axis": 1, "num_outputs": 3}, num_outputs=3, name="split")
    model = _model([split], x, 18, shapes=[[1, 3], [1, 3], [1, 1]])
    converted = convert_opset(model, 13).model
    node = next(iter(converted.graph))
    assert "num_outputs" not in node.attributes and list(node.inputs[1].const_value.numpy()) == [3, 3, 1]
    _runs_equal(ort_cpu, tmp_path, model, converted, np.arange(7, dtype=np.float32)[None])


def test_what_the_target_opset_cannot_express_is_refused():
    x = ir.Value(name="x", shape=ir.Shape([1, 1, 8, 8]), type=FLOAT)
    pool = ir.node("AveragePool", [x], {"kernel_shape": [2, 2], "dilations": [2, 2]}, name="pool")
    with pytest.raises(OpsetError, match="node pool: attribute 'dilations' of AveragePool is not defined at opset 17"):
        convert_opset(_model([pool], x, 21, shapes=[[1, 1, 6, 6]]), 17)
    integers = ir.Value(name="x", shape=ir.Shape([4]), type=ir.TensorType(ir.DataType.INT32))
    with pytest.raises(OpsetError, match=r"node relu: Relu does not take tensor\(int32\) at opset 13"):  # from 14
        convert_opset(_model([ir.node("Relu", [integers], name="relu")], integers, 21, shapes=[[4]]), 13)
    with pytest.raises(OpsetError, match="from 13 to 21, got 12"):
        ConvertOpsetPass(12)


def test_a_functions_build_at_opset_13_is_valid_and_keeps_its_metadata(tmp_path):
    model = build("mobilenet_v2", BuildOptions(batch=1, resolution=64, functions=True, opset=13))
    assert model.opset_imports[""] == 13 and model.opset_imports[BLOCKS_DOMAIN] == 1
    assert all(function.opset_imports[""] == 13 for function in model.functions.values())
    flat = build("mobilenet_v2", BuildOptions(batch=1, resolution=64))
    assert dict(model.metadata_props) == dict(flat.metadata_props) and model.doc_string == flat.doc_string
    proto = onnx.load(str(save(model, tmp_path / "m.onnx")), load_external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    assert [node.name for node in proto.graph.node] == [node.name for node in model.graph]


def test_opset_on_the_command_line(capsys, tmp_path):
    from graphgen.cli import main

    built, converted = tmp_path / "s13.onnx", tmp_path / "s17.onnx"
    assert (
        main(["build", "squeezenet1_1", "--opset", "13", "--batch", "1", "--resolution", "64", "-o", str(built)]) == 0
    )
    assert onnx.load(str(built), load_external_data=False).opset_import[0].version == 13
    assert main(["convert", str(built), "-o", str(converted), "--opset", "17", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "opset: 65 node(s) checked and written at opset 17" in out and ": ok" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "squeezenet1_1", "--opset", "22", "-o", str(tmp_path / "x.onnx")])
    assert exit_info.value.code == 2
    assert "--opset: graphgen writes opsets 13 to 21, not 22" in capsys.readouterr().err
