"""Inception-v4 (Szegedy, Ioffe, Vanhoucke, Alemi 2016), timm's ``inception_v4`` (a TF port).

``features`` is the paper's Figure 9 in order: stem (3 convs, Mixed 3a/4a/5a), 4 × Inception-A,
Reduction-A, 7 × Inception-B, Reduction-B, 3 × Inception-C; then global pool and
``last_linear``. BatchNorm eps 1e-3; branch average pools do *not* count padding
(``count_include_pad=False``); inputs normalised with mean = std = 0.5 (TF Inception style).
"""

from __future__ import annotations

from functools import partial

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network, timm_eval
from graphgen.models.googlenet import HALF, BasicConv2d
from graphgen.onnxscript_api import OpBuilder

conv = BasicConv2d


def max_pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, 2)


def avg_pool() -> nn.AvgPool2d:
    return nn.AvgPool2d(3, 1, 1, count_include_pad=False)


class Concat(nn.Module):
    """Attributes ``branch0``… applied to one input and concatenated (most of the paper's blocks)."""

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        count = sum(1 for name, _ in self.named_children() if name.startswith("branch"))
        return nn.concat(op, [getattr(self, f"branch{i}")(op, x) for i in range(count)])


class Mixed3a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.maxpool = max_pool()
        self.conv = conv(64, 96, 3, 2)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return nn.concat(op, [self.maxpool(op, x), self.conv(op, x)])


class Mixed4a(Concat):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(conv(160, 64, 1), conv(64, 96, 3))
        self.branch1 = nn.Sequential(
            conv(160, 64, 1),
            conv(64, 64, (1, 7), padding=(0, 3)),
            conv(64, 64, (7, 1), padding=(3, 0)),
            conv(64, 96, 3),
        )


class Mixed5a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = conv(192, 192, 3, 2)
        self.maxpool = max_pool()

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return nn.concat(op, [self.conv(op, x), self.maxpool(op, x)])


class InceptionA(Concat):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = conv(384, 96, 1)
        self.branch1 = nn.Sequential(conv(384, 64, 1), conv(64, 96, 3, padding=1))
        self.branch2 = nn.Sequential(conv(384, 64, 1), conv(64, 96, 3, padding=1), conv(96, 96, 3, padding=1))
        self.branch3 = nn.Sequential(avg_pool(), conv(384, 96, 1))


class ReductionA(Concat):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = conv(384, 384, 3, 2)
        self.branch1 = nn.Sequential(conv(384, 192, 1), conv(192, 224, 3, padding=1), conv(224, 256, 3, 2))
        self.branch2 = max_pool()


class InceptionB(Concat):
    def __init__(self) -> None:
        super().__init__()
        row, col = partial(conv, kernel=(1, 7), padding=(0, 3)), partial(conv, kernel=(7, 1), padding=(3, 0))
        self.branch0 = conv(1024, 384, 1)
        self.branch1 = nn.Sequential(conv(1024, 192, 1), row(192, 224), col(224, 256))
        self.branch2 = nn.Sequential(
            conv(1024, 192, 1),
            col(192, 192),
            row(192, 224),
            col(224, 224),
            row(224, 256),
        )
        self.branch3 = nn.Sequential(avg_pool(), conv(1024, 128, 1))


class ReductionB(Concat):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(conv(1024, 192, 1), conv(192, 192, 3, 2))
        self.branch1 = nn.Sequential(
            conv(1024, 256, 1),
            conv(256, 256, (1, 7), padding=(0, 3)),
            conv(256, 320, (7, 1), padding=(3, 0)),
            conv(320, 320, 3, 2),
        )
        self.branch2 = max_pool()


class InceptionC(nn.Module):
    """Its 1×3 / 3×1 pairs fork one tensor and concatenate (flat names, as timm has them)."""

    def __init__(self) -> None:
        super().__init__()
        row, col = partial(conv, kernel=(1, 3), padding=(0, 1)), partial(conv, kernel=(3, 1), padding=(1, 0))
        self.branch0 = conv(1536, 256, 1)
        self.branch1_0 = conv(1536, 384, 1)
        self.branch1_1a = row(384, 256)
        self.branch1_1b = col(384, 256)
        self.branch2_0 = conv(1536, 384, 1)
        self.branch2_1 = col(384, 448)
        self.branch2_2 = row(448, 512)
        self.branch2_3a = row(512, 256)
        self.branch2_3b = col(512, 256)
        self.branch3 = nn.Sequential(avg_pool(), conv(1536, 256, 1))

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        b1 = self.branch1_0(op, x)
        b1 = nn.concat(op, [self.branch1_1a(op, b1), self.branch1_1b(op, b1)], suffix="branch1_cat")
        b2 = self.branch2_2(op, self.branch2_1(op, self.branch2_0(op, x)))
        b2 = nn.concat(op, [self.branch2_3a(op, b2), self.branch2_3b(op, b2)], suffix="branch2_cat")
        return nn.concat(op, [self.branch0(op, x), b1, b2, self.branch3(op, x)])


# fmt: off
FEATURES = (
    [lambda: conv(3, 32, 3, 2), lambda: conv(32, 32, 3), lambda: conv(32, 64, 3, padding=1),
     Mixed3a, Mixed4a, Mixed5a]
    + [InceptionA] * 4 + [ReductionA]   # 35×35 (at 299)
    + [InceptionB] * 7 + [ReductionB]   # 17×17
    + [InceptionC] * 3                  # 8×8
)
# fmt: on
NUM_FEATURES = 1536


class InceptionV4(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(*(make() for make in FEATURES))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.last_linear = nn.Linear(NUM_FEATURES, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return self.last_linear(op, self.flatten(op, self.global_pool(op, self.features(op, x))))


ARCHITECTURES = [
    Architecture(
        name="inception_v4",
        family="inception",
        make=lambda n: Network(InceptionV4(n)),
        resolution=299,
        preprocess=timm_eval(299, 0.875, HALF, HALF),
        head="last_linear",
        reference="timm.inception_v4",
        paper="Szegedy, Ioffe, Vanhoucke, Alemi 2016, Inception-v4, Inception-ResNet and the Impact of Residual "
        "Connections on Learning",
        reference_params=42_679_816,
        reference_gmacs=12.28,
        description="Inception-v4 (timm TF port; BN eps 1e-3, avg-pools exclude padding, mean/std 0.5)",
    )
]
