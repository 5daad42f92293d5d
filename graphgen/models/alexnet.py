"""AlexNet (Krizhevsky et al. 2012) and ZFNet (Zeiler & Fergus 2013).

Each row of a table is one convolution followed by ReLU, then optionally local response
normalisation and a 3×3/2 max pool; the classifier is the same three dense layers for all.

* ``alexnet`` — torchvision's "one weird trick" form: 64-192-384-256-256, no LRN, no groups.
* ``alexnet_2012`` — the paper: 96-256-384-384-256; conv2/4/5 split into groups=2 as on the two
  GPUs (conv3 reads both halves); LRN (n=5, k=2, α=1e-4, β=0.75) after conv1 and conv2; the
  lecture's 224 input with pad 2, giving 55×55 after conv1. The paper's LRN divides α by nothing,
  ONNX/torch divide it by n, so α is passed as n·1e-4 to keep the paper's formula.
* ``zfnet`` — Zeiler & Fergus Fig. 3: 7×7/2 then 5×5/2 first convolutions, dense 384-384-256,
  LRN ("contrast normalisation") after layers 1 and 2. The paper gives neither padding nor pool
  rounding; our choices: conv1 pad 1 (224 → 110), conv2 pad 0 (55 → 26), 3×3 convs pad 1, and
  ceil-mode pools (110 → 55, 26 → 13, 13 → 6) so the maps match the figure's 55, 13 and 6.
"""

from __future__ import annotations

from typing import NamedTuple

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network, imagenet_eval
from graphgen.onnxscript_api import OpBuilder


class ConvRow(NamedTuple):
    out: int
    kernel: int
    stride: int
    pad: int
    groups: int = 1
    lrn: bool = False
    pool: bool = False


# fmt: off
TORCHVISION = [
    #       out   k  s  p  g  lrn    pool
    ConvRow(64,  11, 4, 2, 1, False, True),
    ConvRow(192,  5, 1, 2, 1, False, True),
    ConvRow(384,  3, 1, 1),
    ConvRow(256,  3, 1, 1),
    ConvRow(256,  3, 1, 1, 1, False, True),
]
PAPER_2012 = [
    ConvRow(96,  11, 4, 2, 1, True,  True),
    ConvRow(256,  5, 1, 2, 2, True,  True),
    ConvRow(384,  3, 1, 1),
    ConvRow(384,  3, 1, 1, 2),
    ConvRow(256,  3, 1, 1, 2, False, True),
]
ZFNET = [
    ConvRow(96,   7, 2, 1, 1, True,  True),
    ConvRow(256,  5, 2, 0, 1, True,  True),
    ConvRow(384,  3, 1, 1),
    ConvRow(384,  3, 1, 1),
    ConvRow(256,  3, 1, 1, 1, False, True),
]
# fmt: on
LRN_SIZE = 5


class AlexNet(nn.Module):
    """torchvision's layout: ``features`` (convs), ``avgpool`` (adaptive 6×6), ``classifier``."""

    def __init__(self, rows: list[ConvRow], num_classes: int, ceil_mode: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for row in rows:
            layers += [nn.Conv2d(channels, row.out, row.kernel, row.stride, row.pad, groups=row.groups), nn.ReLU()]
            if row.lrn:
                layers.append(nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_SIZE * 1e-4, beta=0.75, k=2.0))
            if row.pool:
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=ceil_mode))
            channels = row.out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(channels * 36, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return self.classifier(op, self.flatten(op, self.avgpool(op, self.features(op, x))))


ARCHITECTURES = [
    Architecture(
        name="alexnet",
        family="alexnet",
        make=lambda n: Network(AlexNet(TORCHVISION, n)),
        resolution=224,
        preprocess=imagenet_eval(224),
        head="classifier.6",
        reference="torchvision.models.alexnet",
        paper="Krizhevsky, Sutskever, Hinton 2012; Krizhevsky 2014 (one weird trick)",
        reference_params=61_100_840,
        reference_gmacs=0.714,
        description="AlexNet, torchvision's single-GPU form",
    ),
    Architecture(
        name="alexnet_2012",
        family="alexnet",
        make=lambda n: Network(AlexNet(PAPER_2012, n)),
        resolution=224,
        preprocess=imagenet_eval(224),
        head="classifier.6",
        reference="the 2012 paper (two-GPU groups, LRN)",
        paper="Krizhevsky, Sutskever, Hinton 2012, ImageNet Classification with Deep CNNs",
        reference_params=60_965_224,
        description="AlexNet as published: grouped convolutions and LRN",
    ),
    Architecture(
        name="zfnet",
        family="alexnet",
        make=lambda n: Network(AlexNet(ZFNET, n, ceil_mode=True)),
        resolution=224,
        preprocess=imagenet_eval(224),
        head="classifier.6",
        reference="Zeiler & Fergus 2013, Fig. 3",
        paper="Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks",
        reference_params=62_357_608,
        description="ZFNet: AlexNet with a 7x7/2 stem and dense 384-384-256 convolutions",
    ),
]
