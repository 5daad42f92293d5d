"""MobileNetV1 (Howard et al. 2017) as timm builds it, and MobileNetV2 (Sandler et al. 2018) as torchvision does.

V1 is a stem and 13 depthwise-separable blocks (3×3 depthwise, then 1×1 pointwise, each with
BatchNorm and ReLU6), straight into global pooling and the classifier: no head convolution.
V2 stacks inverted residuals: 1×1 expansion, 3×3 depthwise, then a *linear* 1×1 projection
(no activation, so the narrow bottleneck loses no information to ReLU), with a residual only
where the stride is 1 and the channels match.

``--width`` scales every layer's channels, rounded to multiples of 8 as both references do.
V2 keeps its last 1280 channels when narrower (``1280 · max(1, width)``).
"""

from __future__ import annotations

from typing import NamedTuple

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network, Option, imagenet_eval, timm_eval
from graphgen.errors import OptionError
from graphgen.onnxscript_api import OpBuilder


class Row(NamedTuple):
    expand: int  # t: hidden channels = t × input (V1 has none: 1)
    out: int  # c
    repeats: int  # n
    stride: int  # s of the first block


# fmt: off
# MobileNetV1, timm's _gen_mobilenet_v1 ('dsa' blocks), Table 1 of the paper.
V1_STEM = 32
V1_ROWS = [
    #   t  c     n  s
    Row(1, 64,   1, 1),
    Row(1, 128,  2, 2),
    Row(1, 256,  2, 2),
    Row(1, 512,  6, 2),
    Row(1, 1024, 2, 2),
]
# MobileNetV2, Table 2 of the paper (torchvision's inverted_residual_setting).
V2_STEM, V2_LAST = 32, 1280
V2_ROWS = [
    #   t  c    n  s
    Row(1, 16,  1, 1),
    Row(6, 24,  2, 2),
    Row(6, 32,  3, 2),
    Row(6, 64,  4, 2),
    Row(6, 96,  3, 1),
    Row(6, 160, 3, 2),
    Row(6, 320, 1, 1),
]
# fmt: on
TIMM_HALF = (0.5, 0.5, 0.5)  # timm's MobileNetV1 weights normalise with mean = std = 0.5
WIDTH = Option("width", float, "MobileNets: width multiplier of every layer's channels", default=1.0)


def _check_width(width: float) -> float:
    if not width > 0:
        raise OptionError(f"--width must be positive, got {width}")
    return width


class ConvBNReLU6(nn.Sequential):
    """torchvision's Conv2dNormActivation: keys ``.0`` (conv) and ``.1`` (BatchNorm), then ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        super().__init__(conv, nn.BatchNorm2d(cout), nn.ReLU6())


class BatchNormReLU6(nn.BatchNorm2d):
    """timm's BatchNormAct2d: the activation lives inside the norm module, so it owns no key."""

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return nn.emit(op, "Clip", super().forward(op, x), 0.0, 6.0, suffix="act")


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = BatchNormReLU6(cin)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = BatchNormReLU6(cout)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return self.bn2(op, self.conv_pw(op, self.bn1(op, self.conv_dw(op, x))))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        scale = lambda c: nn.make_divisible(c * _check_width(width))  # noqa: E731
        self.conv_stem = nn.Conv2d(3, scale(V1_STEM), 3, 2, 1, bias=False)
        self.bn1 = BatchNormReLU6(scale(V1_STEM))
        cin, stages = scale(V1_STEM), []
        for row in V1_ROWS:
            blocks = []
            for i in range(row.repeats):
                blocks.append(DepthwiseSeparableConv(cin, scale(row.out), row.stride if i == 0 else 1))
                cin = scale(row.out)
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        x = self.blocks(op, self.bn1(op, self.conv_stem(op, x)))
        return self.classifier(op, self.flatten(op, self.global_pool(op, x)))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = round(cin * expand)
        layers: list[nn.Module] = [ConvBNReLU6(cin, hidden, 1)] if expand != 1 else []
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),  # linear bottleneck: no activation
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        out = self.conv(op, x)
        return nn.add(op, x, out) if self.residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        scale = lambda c: nn.make_divisible(c * _check_width(width))  # noqa: E731
        cin = scale(V2_STEM)
        features: list[nn.Module] = [ConvBNReLU6(3, cin, 3, 2)]
        for row in V2_ROWS:
            for i in range(row.repeats):
                features.append(InvertedResidual(cin, scale(row.out), row.stride if i == 0 else 1, row.expand))
                cin = scale(row.out)
        last = nn.make_divisible(V2_LAST * max(1.0, width))  # never narrower than 1280
        features.append(ConvBNReLU6(cin, last, 1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(last, num_classes))

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        x = self.avgpool(op, self.features(op, x))
        return self.classifier(op, self.flatten(op, x))


ARCHITECTURES = [
    Architecture(
        name="mobilenetv1_100",
        family="mobilenet",
        make=lambda n, width: Network(MobileNetV1(n, width)),
        resolution=224,
        preprocess=timm_eval(224, 0.875, TIMM_HALF, TIMM_HALF),
        head="classifier",
        reference="timm.mobilenetv1_100",
        paper="Howard et al. 2017, MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
        reference_params=4_231_976,
        reference_gmacs=0.569,
        description="MobileNetV1 (timm): 13 depthwise-separable blocks, BN+ReLU6; --width scales channels",
        options=(WIDTH,),
    ),
    Architecture(
        name="mobilenet_v2",
        family="mobilenet",
        make=lambda n, width: Network(MobileNetV2(n, width)),
        resolution=224,
        preprocess=imagenet_eval(224),
        head="classifier.1",
        reference="torchvision.models.mobilenet_v2",
        paper="Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks",
        reference_params=3_504_872,
        reference_gmacs=0.301,
        description="MobileNetV2 (torchvision): inverted residuals, linear bottlenecks; --width scales channels",
        options=(WIDTH,),
    ),
]
