"""to_fp16: float16 weights and compute, optionally behind float32 inputs and outputs.

Tolerance: float16 keeps 11 significant bits (≈5e-4 relative per rounding); the converted
networks stay within 5e-3 of the float32 outputs' largest value (measured ≈3–5e-4).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from graphgen.build import BuildOptions, build
from graphgen.passes import to_fp16
from graphgen.passes.to_fp16 import BOUNDARY
from tests.support.passes import check_contract, export, random_inputs, relative_error, run

FP16_RELATIVE = 5e-3
FLOAT, HALF = ir.DataType.FLOAT, ir.DataType.FLOAT16


@pytest.fixture(scope="module")
def resnet18() -> ir.Model:
    return build("resnet18", BuildOptions(resolution=32))


def _float32_values(model: ir.Model) -> list[str]:
    values = [*model.graph.inputs, *model.graph.outputs, *(out for node in model.graph for out in node.outputs)]
    tensors = [v for v in model.graph.initializers.values() if v.const_value.dtype == FLOAT]
    return [v.name for v in values if v.dtype == FLOAT] + [v.name for v in tensors]


def test_everything_float16(resnet18: ir.Model) -> None:
    half = check_contract(to_fp16, resnet18, expect=len(resnet18.graph.initializers) + 2)
    assert _float32_values(half) == []
    inputs = random_inputs(resnet18)
    expected = run(resnet18, inputs)[0]
    actual = run(half, {name: array.astype(np.float16) for name, array in inputs.items()})[0]
    assert actual.dtype == np.float16
    assert relative_error(actual, expected) <= FP16_RELATIVE


def test_keep_float32_inputs_and_outputs(resnet18: ir.Model) -> None:
    half = check_contract(
        lambda m: to_fp16(m, keep_io_types=True), resnet18, expect=len(resnet18.graph.initializers) + 2
    )
    boundaries = [node for node in half.graph if node.metadata_props.get(BOUNDARY)]
    assert [(node.name, node.attributes.get_int("to")) for node in boundaries] == [
        ("input.to_fp16", HALF),
        ("logits.to_fp32", FLOAT),
    ]
    assert _float32_values(half) == [
        "input",
        "logits",
        "logits",
    ]  # the graph's input and output (listed twice: it is a node output)
    inputs = random_inputs(resnet18)
    actual = run(half, inputs)[0]
    assert actual.dtype == np.float32
    assert relative_error(actual, run(resnet18, inputs)[0]) <= FP16_RELATIVE


def test_constants_casts_and_resize_scales(tmp_path) -> None:
    """Constant nodes and Casts become float16; Resize's scales, float32 by definition, stay."""
    torch = pytest.importorskip("torch")

    class Upsampler(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = torch.nn.functional.interpolate(self.conv(x), scale_factor=2.0, mode="nearest")
            return (y * 0.5 + 1.0).to(torch.float32)

    model = export(Upsampler(), (1, 3, 8, 8), tmp_path / "up.onnx")
    half = check_contract(to_fp16, model, expect=2 + 2 + 1 + 2)  # weight+bias, 2 constants, 1 cast, in+out
    resize = next(node for node in half.graph if node.op_type == "Resize")
    assert resize.inputs[2].producer().attributes.get_tensor("value").dtype == FLOAT
    cast = next(node for node in half.graph if node.op_type == "Cast")
    assert cast.attributes.get_int("to") == HALF
    inputs = random_inputs(model)
    actual = run(half, {name: array.astype(np.float16) for name, array in inputs.items()})[0]
    assert actual.shape == (1, 4, 16, 16) and relative_error(actual, run(model, inputs)[0]) <= FP16_RELATIVE
