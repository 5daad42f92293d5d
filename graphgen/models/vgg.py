"""VGG (Simonyan & Zisserman 2014), torchvision's layout.

Configurations A, B, D, E of the paper's Table 1: numbers are 3×3 convolutions (pad 1, with
bias, then ReLU; with BatchNorm before the ReLU in the ``_bn`` variants, which keep the conv
bias), ``M`` a 2×2/2 max pool. The classifier reads an adaptive 7×7 pool (the identity at 224).
"""

from __future__ import annotations

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network, imagenet_eval
from graphgen.onnxscript_api import OpBuilder

M = "M"
# fmt: off
CONFIGS: dict[int, list[int | str]] = {
    11: [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    13: [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    16: [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
    19: [64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M],
}
# torchvision's published parameter counts and GMACs: (plain, with BatchNorm), GMACs.
REFERENCE = {
    11: (132_863_336, 132_868_840, 7.609),
    13: (133_047_848, 133_053_736, 11.308),
    16: (138_357_544, 138_365_992, 15.470),
    19: (143_667_240, 143_678_248, 19.632),
}
# fmt: on


class VGG(nn.Module):
    def __init__(self, config: list[int | str], batch_norm: bool, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in config:
            if isinstance(item, str):  # M
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(channels, item, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(item))
            layers.append(nn.ReLU())
            channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(channels * 49, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return self.classifier(op, self.flatten(op, self.avgpool(op, self.features(op, x))))


def _vgg(depth: int, batch_norm: bool) -> Architecture:
    plain, with_bn, gmacs = REFERENCE[depth]
    name = f"vgg{depth}_bn" if batch_norm else f"vgg{depth}"
    return Architecture(
        name=name,
        family="vgg",
        make=lambda n: Network(VGG(CONFIGS[depth], batch_norm, n)),
        resolution=224,
        preprocess=imagenet_eval(224),
        head="classifier.6",
        reference=f"torchvision.models.{name}",
        paper="Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition",
        reference_params=with_bn if batch_norm else plain,
        reference_gmacs=gmacs,
        description=f"VGG-{depth}{' with BatchNorm' if batch_norm else ''}",
    )


ARCHITECTURES = [_vgg(depth, bn) for depth in CONFIGS for bn in (False, True)]
