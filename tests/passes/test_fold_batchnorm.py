"""fold_batchnorm: Conv → BatchNormalization pairs become one Conv, with equal outputs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from graphgen.build import BuildOptions, build
from graphgen.metadata import FOLDED_FROM, FOLDED_SCALE, REFERENCE_PARAMS
from graphgen.passes import fold_batchnorm, to_fp16
from graphgen.stats import layer_stats
from tests.support.passes import assert_equivalent, check_contract, export, op_counts, randomize_batchnorm

torch = pytest.importorskip("torch")

FP16_RELATIVE = 5e-3  # float16 keeps 11 significant bits: ~5e-4 per rounding, 10× margin for depth


def _resnet18_with_bn() -> ir.Model:
    """graphgen's ResNet-18 unfolded, its BatchNorms given random statistics."""
    model = build("resnet18", BuildOptions(keep_bn=True, resolution=32))
    rng = np.random.default_rng(0)
    for node in model.graph:
        if node.op_type == "BatchNormalization":
            for value, (low, high) in zip(node.inputs[1:5], ((0.5, 1.5), (-0.3, 0.3), (-0.3, 0.3), (0.5, 1.5))):
                value.const_value = ir.Tensor(rng.uniform(low, high, value.const_value.shape).astype(np.float32))
    return model


def test_graphgen_resnet18() -> None:
    model = _resnet18_with_bn()
    folded = check_contract(fold_batchnorm, model, expect=20)
    assert "BatchNormalization" not in op_counts(folded)
    assert op_counts(folded)["Conv"] == op_counts(model)["Conv"]
    assert assert_equivalent(model, folded) <= 1e-5
    conv1 = next(node for node in folded.graph if node.name == "conv1")
    assert conv1.metadata_props[FOLDED_FROM] == "bn1" and conv1.metadata_props[REFERENCE_PARAMS] == str(
        64 * 3 * 49 + 128
    )
    # statistics count what torch counts, folded or not
    assert layer_stats(folded).params == layer_stats(model).params == 11_689_512


class ConvBnNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.conv2, self.bn2 = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


@pytest.mark.parametrize("random_statistics", [False, True], ids=["fresh-bn", "random-bn"])
def test_torchscript_export_with_shared_constants(tmp_path, random_statistics: bool) -> None:
    """TorchScript keeps BatchNorm with training=PRESERVE, and feeds equal parameters through Identity nodes."""
    module = ConvBnNet()
    if random_statistics:
        randomize_batchnorm(module)
    model = export(module, (1, 3, 8, 8), tmp_path / "net.onnx", keep_bn=True)
    if not random_statistics:  # fresh BatchNorms share γ=1/β=0 tensors: the exporter adds Identity nodes
        assert op_counts(model).get("Identity", 0) > 0
    folded = check_contract(fold_batchnorm, model, expect=2)
    assert "BatchNormalization" not in op_counts(folded)
    assert_equivalent(model, folded)


def test_dynamo_export(tmp_path) -> None:
    """The dynamo exporter keeps BatchNorm when its optimiser is off (optimize=False).

    Its convolutions then need their own bias: unoptimised, a bias-free Conv gets a computed zero
    bias (Expand of a constant), which no fold may assume constant.
    """
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    randomize_batchnorm(module)
    model = export(module, (1, 3, 8, 8), tmp_path / "net.onnx", keep_bn=True, dynamo=True)
    folded = check_contract(fold_batchnorm, model, expect=1)
    assert op_counts(folded) == {"Conv": 1, "Relu": 1}
    assert_equivalent(model, folded)


class SharedConv(torch.nn.Module):
    """One convolution used twice, each use followed by its own BatchNorm; and a lone BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn1, self.bn2, self.bn_input = torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn1(self.conv(x)) + self.bn2(self.conv(self.bn_input(x) * 2))


def test_shared_weights_get_private_copies(tmp_path) -> None:
    module = SharedConv()
    randomize_batchnorm(module)
    model = export(module, (1, 3, 8, 8), tmp_path / "shared.onnx", keep_bn=True)
    convs = [node for node in model.graph if node.op_type == "Conv"]
    assert convs[0].inputs[1] is convs[1].inputs[1]  # the exporter shares the weight
    folded = check_contract(fold_batchnorm, model, expect=2)
    assert op_counts(folded)["BatchNormalization"] == 1  # the BatchNorm of the input has no Conv to go into
    convs = [node for node in folded.graph if node.op_type == "Conv"]
    assert convs[0].inputs[1] is not convs[1].inputs[1]
    assert_equivalent(model, folded)


class ConvReadTwice(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_conv_read_by_more_than_its_batchnorm_stays(tmp_path) -> None:
    model = export(ConvReadTwice(), (1, 3, 8, 8), tmp_path / "twice.onnx", keep_bn=True)
    check_contract(fold_batchnorm, model, expect=0)


def test_float16_model_stays_float16() -> None:
    model = to_fp16(_resnet18_with_bn()).model
    folded = check_contract(fold_batchnorm, model, expect=20)
    assert {value.const_value.dtype for value in folded.graph.initializers.values()} == {ir.DataType.FLOAT16}
    assert "BatchNormalization" not in op_counts(folded)
    assert_equivalent(model, folded, tolerance=FP16_RELATIVE)


class ConvScales(torch.nn.Module):
    """Constant scales after convolutions: a scalar (Inception-ResNet), per channel, and in either operand order."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 4, 1, bias=False)
        self.conv3, self.bn3 = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4)
        self.conv4 = torch.nn.Conv2d(4, 4, 1)
        self.register_buffer("per_channel", torch.tensor([0.5, -1.0, 2.0, 0.25]).reshape(4, 1, 1))

    def forward(self, x):
        y = torch.relu(self.conv1(x) * 0.17)
        y = torch.relu(self.per_channel * self.conv2(y))
        y = self.bn3(self.conv3(y)) * 1.5  # the BatchNorm folds first, then the scale
        z = self.conv4(y)
        return z * 0.5 + z  # z is read twice: its scale cannot go into conv4


def test_constant_scales_fold_into_the_convolution(tmp_path) -> None:
    module = ConvScales()
    randomize_batchnorm(module)
    model = export(module, (1, 3, 8, 8), tmp_path / "scales.onnx", keep_bn=True)
    assert op_counts(model)["Mul"] == 4
    folded = check_contract(fold_batchnorm, model, expect=4)  # three scales and a BatchNorm
    assert op_counts(folded)["Mul"] == 1 and "BatchNormalization" not in op_counts(folded)
    convs = {node.name: node for node in folded.graph if node.op_type == "Conv"}
    assert [len(conv.inputs) for conv in convs.values()] == [3, 2, 3, 3]  # a bias-free Conv scaled stays bias-free
    assert sum(FOLDED_SCALE in conv.metadata_props for conv in convs.values()) == 3
    # a torch export has no module metadata: the description says the op, the name and what was folded in
    assert convs["/conv1/Conv"].doc_string == "Conv /conv1/Conv (constant scale /Mul folded in)"
    assert_equivalent(model, folded)


def test_graphgen_inception_resnet_residual_scales() -> None:
    """Inception-ResNet-v2's 39 residual scales: Muls in the training form, folded in the inference form."""
    training = build("inception_resnet_v2", BuildOptions(keep_bn=True, batch=1, resolution=75))
    inference = build("inception_resnet_v2", BuildOptions(batch=1, resolution=75))
    assert op_counts(training)["Mul"] == 39 and "Mul" not in op_counts(inference)
    assert sum(FOLDED_SCALE in node.metadata_props for node in inference.graph) == 39
    assert len(inference.graph) == len(training.graph) - op_counts(training)["BatchNormalization"] - 39
    assert_equivalent(training, inference, batch=1)
