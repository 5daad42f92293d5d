"""SqueezeNet 1.0 / 1.1 (Iandola et al. 2016), torchvision's layout.

Fire modules: a 1×1 *squeeze* conv, then parallel 1×1 and 3×3 *expand* convs concatenated
(each with ReLU). No fully connected layer: a 1×1 conv to the classes, ReLU, global average
pool. 1.1 moves the pools earlier and uses a 3×3/64 stem: the same accuracy for 2.4× fewer
MACs. Max-pools use ``ceil_mode=True`` as torchvision's do.
"""

from __future__ import annotations

from typing import TypedDict

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network, imagenet_eval
from graphgen.onnxscript_api import OpBuilder

POOL = "pool"


class Version(TypedDict):
    stem: tuple[int, int]  # channels, kernel
    layers: list[tuple[int, int] | str]
    params: int
    gmacs: float


# fmt: off
# After the stem conv + ReLU: "pool" or a Fire module's (squeeze, expand per branch) channels.
VERSIONS: dict[str, Version] = {
    "1_0": {"stem": (96, 7), "layers": [POOL, (16, 64), (16, 64), (32, 128), POOL, (32, 128), (48, 192), (48, 192),
                                        (64, 256), POOL, (64, 256)],
            "params": 1_248_424, "gmacs": 0.819},
    "1_1": {"stem": (64, 3), "layers": [POOL, (16, 64), (16, 64), POOL, (32, 128), (32, 128), POOL, (48, 192),
                                        (48, 192), (64, 256), (64, 256)],
            "params": 1_235_496, "gmacs": 0.349},
}
# fmt: on


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.squeeze_activation = nn.ReLU()
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand1x1_activation = nn.ReLU()
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.expand3x3_activation = nn.ReLU()

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        x = self.squeeze_activation(op, self.squeeze(op, x))
        left = self.expand1x1_activation(op, self.expand1x1(op, x))
        right = self.expand3x3_activation(op, self.expand3x3(op, x))
        return nn.concat(op, [left, right])


class SqueezeNet(nn.Module):
    def __init__(self, version: str, num_classes: int) -> None:
        super().__init__()
        spec = VERSIONS[version]
        channels, kernel = spec["stem"]
        layers: list[nn.Module] = [nn.Conv2d(3, channels, kernel, 2), nn.ReLU()]
        for layer in spec["layers"]:
            if isinstance(layer, str):  # POOL
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            else:
                squeeze, expand = layer
                layers.append(Fire(channels, squeeze, expand))
                channels = 2 * expand
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Conv2d(channels, num_classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        self.flatten = nn.Flatten()

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return self.flatten(op, self.classifier(op, self.features(op, x)))


def _squeezenet(version: str) -> Architecture:
    spec = VERSIONS[version]
    return Architecture(
        name=f"squeezenet{version}",
        family="squeezenet",
        make=lambda n: Network(SqueezeNet(version, n)),
        resolution=224,
        preprocess=imagenet_eval(224),
        head="classifier.1",
        reference=f"torchvision.models.squeezenet{version}",
        paper="Iandola et al. 2016, SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size",
        reference_params=spec["params"],
        reference_gmacs=spec["gmacs"],
        description=f"SqueezeNet {version.replace('_', '.')} (torchvision): Fire modules, conv classifier",
    )


ARCHITECTURES = [_squeezenet(version) for version in VERSIONS]
