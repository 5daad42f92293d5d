"""int8 judged against float: agreement and SQNR computed right on known answers, layers named as graphgen
names them, and --auto-keep keeping the layers that cost the logits most."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper

from graphgen.int8.autokeep import auto_keep
from graphgen.int8.images import ImageSet, image_files
from graphgen.int8.quantize import Int8Options, computing_layers, quantize
from graphgen.int8.report import agreement, evaluate
from graphgen.metadata import Preprocess


def test_agreement_on_a_case_with_a_known_answer():
    reference = np.array([[5.0, 1, 0, 0, 0, 0], [0, 4, 1, 0, 0, 0], [1, 2, 3, 4, 5, 6], [2, 0, 0, 0, 0, 0]])
    quantized = reference.copy()
    quantized[1] = [0, 3, 3.5, 0, 0, 0]  # class 2 now best; class 1 still in the top 5
    quantized[2] = [9, 8, 7, 6, 5, 4]  # class 5 (the float best) is sixth: out of the top 5 too
    result = agreement(reference, quantized)
    assert (result.images, result.top1, result.top5) == (4, 2, 3)
    # per image max|q - f| / max|f|: 0, 2.5/4, 8/6, 0
    assert result.max_relative == pytest.approx(8 / 6)
    assert result.median_relative == pytest.approx((0 + 2.5 / 4) / 2)
    with pytest.raises(ValueError, match="need equal"):
        agreement(reference, quantized[:3])


@pytest.fixture(scope="module")
def sets(resnet18, images):
    files = image_files([images])
    rule = Preprocess.from_metadata(resnet18.metadata_props)
    return ImageSet.load(files[:6], rule), ImageSet.load(files[6:], rule)


def _scaled_logits(model: ir.Model, factor: float) -> ir.Model:
    """The model with its logits multiplied by ``factor`` (the last layer's output keeps the name)."""
    proto = ir.serde.serialize_model(model)
    logits = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [f"{logits}_raw" if value == logits else value for value in node.output]
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(factor, np.float32), "factor"))
    proto.graph.node.append(helper.make_node("Mul", [f"{logits}_raw", "factor"], [logits], name="scale"))
    return ir.serde.deserialize_model(proto)


def test_sqnr_and_relative_error_on_a_known_answer(resnet18, sets):
    """Logits 1.1× the float ones: the classifier's SQNR is 10·log10(1 / 0.1²) = 20 dB, every other layer exact."""
    held = sets[1]
    report = evaluate(resnet18, _scaled_logits(resnet18, 1.1), held)
    assert report.agreement.top1 == report.agreement.top5 == len(held)
    assert report.agreement.max_relative == pytest.approx(0.1, rel=1e-5)
    assert report.agreement.median_relative == pytest.approx(0.1, rel=1e-5)
    fc = report.sensitivity.row("fc")
    assert fc.sqnr_db == pytest.approx(20.0, abs=1e-3)
    assert fc.own_db == pytest.approx(20.0, abs=1e-3) and fc.at_logits_db == pytest.approx(20.0, abs=1e-3)
    others = [row for row in report.sensitivity.rows if row.name != "fc"]
    assert others and all(math.isinf(row.sqnr_db) for row in others)
    assert report.sensitivity.worst(1)[0].name == "fc"


@pytest.fixture(scope="module")
def judged(resnet18, sets):
    calibration, held = sets
    return evaluate(resnet18, quantize(resnet18, calibration, Int8Options()).model, held)


def test_every_layer_is_reported_under_its_graphgen_name(resnet18, judged):
    names = [row.name for row in judged.sensitivity.rows]
    assert names == ["input", *(layer.name for layer in computing_layers(resnet18))]
    assert {"conv1", "layer1.0.conv1", "layer4.1.conv2", "layer4.1.add", "fc"} <= set(names)
    assert not [name for name in names if "QuantizeLinear" in name or "DequantizeLinear" in name]
    conv1 = judged.sensitivity.row("conv1")
    assert conv1.op == "Conv+Relu" and 10 < conv1.sqnr_db < 80
    assert all(row.own_db is not None and row.at_logits_db is not None for row in judged.sensitivity.rows[1:])
    assert judged.lines()[0].startswith("verify: int8 against float on 2 held-out image(s): top-1 agreement ")
    assert judged.table()[0].split()[:4] == ["layer", "op", "SQNR", "dB"]


def test_auto_keep_keeps_the_layers_that_cost_the_logits_most(resnet18, sets):
    calibration, held = sets
    result = auto_keep(resnet18, calibration, held, Int8Options(), 2)
    expected = [row.name for row in result.plain_report.sensitivity.most_sensitive(2)]
    assert result.kept.kept == tuple(expected)
    for name in expected:  # now float inside (only its output is still quantized for the next layer): closer alone
        before, after = (report.sensitivity.row(name).own_db for report in (result.plain_report, result.kept_report))
        assert before is not None and after is not None and after > before
        assert name not in result.kept.int8_layers
    assert set(result.latency.median_ms) == {"float", "int8", "int8+kept"}
    text = "\n".join(result.lines())
    assert f"auto-keep: kept float: {expected[0]}, {expected[1]}" in text and "load " in text
