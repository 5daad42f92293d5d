"""Inception-ResNet-v2 (Szegedy et al. 2016), timm's ``inception_resnet_v2`` (a TF port).

Residual Inception blocks: the branches are concatenated, a 1×1 conv *with bias* and no BN
restores the width, and the result is scaled before the add — 0.17 for the 10 Block35
(35×35), 0.10 for the 20 Block17 (17×17), 0.20 for the 9 Block8 (8×8) — "to stabilise
training" (paper §3.3). The tenth Block8, ``block8``, has scale 1 and no ReLU after the add.
BatchNorm eps 1e-3; avg-pools exclude padding; inputs normalised with mean = std = 0.5.
"""

from __future__ import annotations

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network, timm_eval
from graphgen.models.googlenet import HALF
from graphgen.models.inception_v4 import Concat, avg_pool, conv, max_pool
from graphgen.onnxscript_api import OpBuilder

# fmt: off
#                 blocks  scale  (paper Figure 18; tapering the residuals)
REPEATS = {
    "repeat":   (10, 0.17),   # Block35 on 320 channels
    "repeat_1": (20, 0.10),   # Block17 on 1088 channels
    "repeat_2": (9,  0.20),   # Block8 on 2080 channels, then block8 (scale 1, no ReLU)
}
# fmt: on
NUM_FEATURES = 1536


class Mixed5b(Concat):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = conv(192, 96, 1)
        self.branch1 = nn.Sequential(conv(192, 48, 1), conv(48, 64, 5, padding=2))
        self.branch2 = nn.Sequential(conv(192, 64, 1), conv(64, 96, 3, padding=1), conv(96, 96, 3, padding=1))
        self.branch3 = nn.Sequential(avg_pool(), conv(192, 64, 1))


class Mixed6a(Concat):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = conv(320, 384, 3, 2)
        self.branch1 = nn.Sequential(conv(320, 256, 1), conv(256, 256, 3, padding=1), conv(256, 384, 3, 2))
        self.branch2 = max_pool()


class Mixed7a(Concat):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(conv(1088, 256, 1), conv(256, 384, 3, 2))
        self.branch1 = nn.Sequential(conv(1088, 256, 1), conv(256, 288, 3, 2))
        self.branch2 = nn.Sequential(conv(1088, 256, 1), conv(256, 288, 3, padding=1), conv(288, 320, 3, 2))
        self.branch3 = max_pool()


class ResidualInception(Concat):
    """relu(x + scale · conv2d(concat(branches(x)))); subclasses define the branches."""

    def __init__(self, branches_width: int, channels: int, scale: float, relu: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.conv2d = nn.Conv2d(branches_width, channels, 1)
        self.relu = nn.ReLU() if relu else None

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        out = self.conv2d(op, super().forward(op, x))
        if self.scale != 1.0:
            out = nn.emit(op, "Mul", out, self.scale, suffix="scale")
        out = nn.add(op, out, x)
        return self.relu(op, out) if self.relu is not None else out


class Block35(ResidualInception):
    def __init__(self, scale: float) -> None:
        super().__init__(128, 320, scale)
        self.branch0 = conv(320, 32, 1)
        self.branch1 = nn.Sequential(conv(320, 32, 1), conv(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(conv(320, 32, 1), conv(32, 48, 3, padding=1), conv(48, 64, 3, padding=1))


class Block17(ResidualInception):
    def __init__(self, scale: float) -> None:
        super().__init__(384, 1088, scale)
        self.branch0 = conv(1088, 192, 1)
        self.branch1 = nn.Sequential(
            conv(1088, 128, 1), conv(128, 160, (1, 7), padding=(0, 3)), conv(160, 192, (7, 1), padding=(3, 0))
        )


class Block8(ResidualInception):
    def __init__(self, scale: float, relu: bool = True) -> None:
        super().__init__(448, 2080, scale, relu)
        self.branch0 = conv(2080, 192, 1)
        self.branch1 = nn.Sequential(
            conv(2080, 192, 1), conv(192, 224, (1, 3), padding=(0, 1)), conv(224, 256, (3, 1), padding=(1, 0))
        )


BLOCKS = {"repeat": Block35, "repeat_1": Block17, "repeat_2": Block8}


def _repeat(name: str) -> nn.Sequential:
    count, scale = REPEATS[name]
    return nn.Sequential(*(BLOCKS[name](scale) for _ in range(count)))


class InceptionResnetV2(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv2d_1a = conv(3, 32, 3, 2)
        self.conv2d_2a = conv(32, 32, 3)
        self.conv2d_2b = conv(32, 64, 3, padding=1)
        self.maxpool_3a = max_pool()
        self.conv2d_3b = conv(64, 80, 1)
        self.conv2d_4a = conv(80, 192, 3)
        self.maxpool_5a = max_pool()
        self.mixed_5b = Mixed5b()
        self.repeat = _repeat("repeat")
        self.mixed_6a = Mixed6a()
        self.repeat_1 = _repeat("repeat_1")
        self.mixed_7a = Mixed7a()
        self.repeat_2 = _repeat("repeat_2")
        self.block8 = Block8(1.0, relu=False)
        self.conv2d_7b = conv(2080, NUM_FEATURES, 1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classif = nn.Linear(NUM_FEATURES, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        for name in (
            "conv2d_1a",
            "conv2d_2a",
            "conv2d_2b",
            "maxpool_3a",
            "conv2d_3b",
            "conv2d_4a",
            "maxpool_5a",
            "mixed_5b",
            "repeat",
            "mixed_6a",
            "repeat_1",
            "mixed_7a",
            "repeat_2",
            "block8",
            "conv2d_7b",
        ):
            x = getattr(self, name)(op, x)
        return self.classif(op, self.flatten(op, self.global_pool(op, x)))


ARCHITECTURES = [
    Architecture(
        name="inception_resnet_v2",
        family="inception",
        make=lambda n: Network(InceptionResnetV2(n)),
        resolution=299,
        preprocess=timm_eval(299, 0.8975, HALF, HALF),
        head="classif",
        reference="timm.inception_resnet_v2",
        paper="Szegedy, Ioffe, Vanhoucke, Alemi 2016, Inception-v4, Inception-ResNet and the Impact of Residual "
        "Connections on Learning",
        reference_params=55_843_464,
        reference_gmacs=13.18,
        description="Inception-ResNet-v2 (timm TF port; residual scales 0.17/0.10/0.20, last Block8 without ReLU)",
    )
]
