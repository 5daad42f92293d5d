"""EfficientNet B0–B7 (Tan & Le 2019), compound scaling for any φ, and EfficientNetV2 S/M/L (Tan & Le 2021).

Module names follow torchvision (``features.3.1.block.2.fc1``), so its checkpoints load by key.

**Compound scaling.** From B0, φ scales depth by α^φ, width by β^φ and resolution by γ^φ with
α = 1.2, β = 1.1, γ = 1.15 (α·β²·γ² ≈ 1.92 ≈ 2, so MACs roughly double per unit of φ). The
reference's rounding: stage repeats ``ceil(n · depth)``, channels ``make_divisible(c · width, 8)``,
head 4 × the last stage's channels. ``graphgen build efficientnet --phi X`` applies pure powers for
any real X ≥ 0; the resolution 224·γ^φ is rounded to the nearest multiple of 8 (the channel
granularity; it keeps 224 at φ = 0 and stays within 4 pixels of the power).

**The released B1–B7 are not pure powers**: they are a hand-set table of (width, depth,
resolution) whose three implied φ's disagree (B1 widens nothing; B4–B7 grow faster than any
single φ). :func:`implied_phi` gives them; ``graphgen list`` and ``stats`` show both. The models
registered as ``efficientnet_b*`` use the table, as torchvision does (with its eval resolution:
B2 is evaluated at 288, not the paper's 260). BatchNorm eps is torchvision's per model: 1e-5 for
B0–B4 (weights trained in PyTorch), 1e-3 for B5–B7 and V2 (ported from TensorFlow).

**V2** starts with Fused-MBConv (one k×k expansion conv, then a 1×1 projection; no SE) and fixes
the head at 1280. SE everywhere squeezes to ``max(1, block input // 4)`` channels — the block's
input, not its expanded width. Stochastic depth and dropout are the identity at inference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network, Option
from graphgen.errors import OptionError
from graphgen.metadata import IMAGENET_MEAN, IMAGENET_STD, SCALING, Preprocess
from graphgen.onnxscript_api import OpBuilder


class Stage(NamedTuple):
    block: str  # "mb": MBConv (expand, depthwise, SE, project); "fused": Fused-MBConv (k×k expand, project)
    expand: int
    kernel: int
    stride: int
    out: int
    repeats: int


# fmt: off
#                 block   t  k  s  c    n
B0_STAGES = (
    Stage("mb",    1, 3, 1, 16,  1),
    Stage("mb",    6, 3, 2, 24,  2),
    Stage("mb",    6, 5, 2, 40,  2),
    Stage("mb",    6, 3, 2, 80,  3),
    Stage("mb",    6, 5, 1, 112, 3),
    Stage("mb",    6, 5, 2, 192, 4),
    Stage("mb",    6, 3, 1, 320, 1),
)
V2_S_STAGES = (
    Stage("fused", 1, 3, 1, 24,  2),
    Stage("fused", 4, 3, 2, 48,  4),
    Stage("fused", 4, 3, 2, 64,  4),
    Stage("mb",    4, 3, 2, 128, 6),
    Stage("mb",    6, 3, 1, 160, 9),
    Stage("mb",    6, 3, 2, 256, 15),
)
V2_M_STAGES = (
    Stage("fused", 1, 3, 1, 24,  3),
    Stage("fused", 4, 3, 2, 48,  5),
    Stage("fused", 4, 3, 2, 80,  5),
    Stage("mb",    4, 3, 2, 160, 7),
    Stage("mb",    6, 3, 1, 176, 14),
    Stage("mb",    6, 3, 2, 304, 18),
    Stage("mb",    6, 3, 1, 512, 5),
)
V2_L_STAGES = (
    Stage("fused", 1, 3, 1, 32,  4),
    Stage("fused", 4, 3, 2, 64,  7),
    Stage("fused", 4, 3, 2, 96,  7),
    Stage("mb",    4, 3, 2, 192, 10),
    Stage("mb",    6, 3, 1, 224, 19),
    Stage("mb",    6, 3, 2, 384, 25),
    Stage("mb",    6, 3, 1, 640, 7),
)
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases of compound scaling
BASE_RESOLUTION = 224


class Released(NamedTuple):
    width: float
    depth: float
    paper_resolution: int
    resolution: int  # torchvision's evaluation crop
    resize: int
    bn_eps: float
    params: int  # torchvision num_params
    gmacs: float  # torchvision _ops at `resolution`


#                 w    d    paper tv   resize eps   params      GMACs
RELEASED = {
    "b0": Released(1.0, 1.0, 224, 224, 256, 1e-5,  5_288_548,  0.386),
    "b1": Released(1.0, 1.1, 240, 240, 256, 1e-5,  7_794_184,  0.687),
    "b2": Released(1.1, 1.2, 260, 288, 288, 1e-5,  9_109_994,  1.088),
    "b3": Released(1.2, 1.4, 300, 300, 320, 1e-5, 12_233_232,  1.827),
    "b4": Released(1.4, 1.8, 380, 380, 384, 1e-5, 19_341_616,  4.394),
    "b5": Released(1.6, 2.2, 456, 456, 456, 1e-3, 30_389_784, 10.266),
    "b6": Released(1.8, 2.6, 528, 528, 528, 1e-3, 43_040_704, 19.068),
    "b7": Released(2.0, 3.1, 600, 600, 600, 1e-3, 66_347_960, 37.746),
}
# fmt: on


@dataclass(frozen=True)
class EfficientNetConfig:
    stem: int
    stages: tuple[Stage, ...]
    width: float = 1.0
    depth: float = 1.0
    head: int | None = None  # None: 4 × the last stage's channels (V1); V2 fixes 1280
    bn_eps: float = 1e-5

    def channels(self, c: int) -> int:
        return nn.make_divisible(c * self.width)

    def repeats(self, n: int) -> int:
        return math.ceil(n * self.depth)


B0 = EfficientNetConfig(32, B0_STAGES)
V2 = {
    "s": EfficientNetConfig(24, V2_S_STAGES, head=1280, bn_eps=1e-3),
    "m": EfficientNetConfig(24, V2_M_STAGES, head=1280, bn_eps=1e-3),
    "l": EfficientNetConfig(32, V2_L_STAGES, head=1280, bn_eps=1e-3),
}


def compound(phi: float) -> tuple[EfficientNetConfig, int]:
    """B0 scaled by pure powers: (config, resolution) for compound coefficient ``phi``."""
    if not (math.isfinite(phi) and phi >= 0):
        raise OptionError(f"--phi must be a finite number >= 0, got {phi}")
    resolution = round(BASE_RESOLUTION * GAMMA**phi / 8) * 8
    return replace(B0, width=BETA**phi, depth=ALPHA**phi), resolution


def implied_phi(width: float, depth: float, resolution: int) -> tuple[float, float, float]:
    """The φ each released multiplier would need under pure powers: (from width, depth, resolution)."""
    return math.log(width, BETA), math.log(depth, ALPHA), math.log(resolution / BASE_RESOLUTION, GAMMA)


class ConvNormActivation(nn.Sequential):
    """torchvision's Conv2dNormActivation: ``.0`` conv (same padding, no bias), ``.1`` BatchNorm, then SiLU."""

    def __init__(
        self, cin: int, cout: int, kernel: int, eps: float, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        layers = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps),
        ]
        super().__init__(*layers, *([nn.SiLU()] if act else []))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.activation = nn.SiLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_activation = nn.Sigmoid()

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        scale = self.fc2(op, self.activation(op, self.fc1(op, self.avgpool(op, x))))
        return nn.emit(op, "Mul", self.scale_activation(op, scale), x, suffix="scale")


class ResidualBlock(nn.Module):
    """``block`` plus the input where shapes allow (stochastic depth is the identity at inference)."""

    def __init__(self, layers: Sequence[nn.Module], cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        out = self.block(op, x)
        return nn.add(op, out, x) if self.residual else out


class MBConv(ResidualBlock):
    """1×1 expansion, k×k depthwise, squeeze-and-excitation, linear 1×1 projection."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, eps: float) -> None:
        hidden = nn.make_divisible(cin * expand)
        layers: list[nn.Module] = [ConvNormActivation(cin, hidden, 1, eps)] if hidden != cin else []
        layers += [
            ConvNormActivation(hidden, hidden, kernel, eps, stride, groups=hidden),
            SqueezeExcitation(hidden, max(1, cin // 4)),  # squeezes the block's *input* width
            ConvNormActivation(hidden, cout, 1, eps, act=False),
        ]
        super().__init__(layers, cin, cout, stride)


class FusedMBConv(ResidualBlock):
    """EfficientNetV2's early block: expansion and depthwise fused into one k×k conv, then a 1×1 projection; no SE."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, eps: float) -> None:
        hidden = nn.make_divisible(cin * expand)
        if hidden == cin:  # expand ratio 1: the k×k conv maps straight to the output
            layers = [ConvNormActivation(cin, cout, kernel, eps, stride)]
        else:
            layers = [
                ConvNormActivation(cin, hidden, kernel, eps, stride),
                ConvNormActivation(hidden, cout, 1, eps, act=False),
            ]
        super().__init__(layers, cin, cout, stride)


BLOCKS = {"mb": MBConv, "fused": FusedMBConv}


class EfficientNet(nn.Module):
    def __init__(self, config: EfficientNetConfig, num_classes: int) -> None:
        super().__init__()
        eps = config.bn_eps
        cin = config.channels(config.stem)
        features: list[nn.Module] = [ConvNormActivation(3, cin, 3, eps, stride=2)]
        for stage in config.stages:
            cout = config.channels(stage.out)
            blocks = []
            for i in range(config.repeats(stage.repeats)):
                stride = stage.stride if i == 0 else 1
                blocks.append(BLOCKS[stage.block](cin, cout, stage.expand, stage.kernel, stride, eps))
                cin = cout
            features.append(nn.Sequential(*blocks))
        head = config.head or 4 * cin
        features.append(ConvNormActivation(cin, head, 1, eps))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(head, num_classes))

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        x = self.avgpool(op, self.features(op, x))
        return self.classifier(op, self.flatten(op, x))


def _scaling_note(width: float, depth: float, resolution: int) -> str:
    phi_w, phi_d, phi_r = implied_phi(width, depth, resolution)
    return (
        f"released table w{width:.1f} d{depth:.1f} r{resolution}, not pure powers: "
        f"implied φ {phi_w:.2f} (w) {phi_d:.2f} (d) {phi_r:.2f} (r)"
    )


def _released(variant: str) -> Architecture:
    row = RELEASED[variant]
    config = replace(B0, width=row.width, depth=row.depth, bn_eps=row.bn_eps)

    def make(num_classes: int) -> Network:
        scaling = _scaling_note(row.width, row.depth, row.paper_resolution)
        return Network(EfficientNet(config, num_classes), metadata={SCALING: scaling})

    return Architecture(
        name=f"efficientnet_{variant}",
        family="efficientnet",
        make=make,
        resolution=row.resolution,
        preprocess=Preprocess(row.resize, row.resolution, interpolation="bicubic"),
        head="classifier.1",
        reference=f"torchvision.models.efficientnet_{variant}",
        paper="Tan & Le 2019, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
        reference_params=row.params,
        reference_gmacs=row.gmacs,
        description=f"EfficientNet-{variant.upper()} (torchvision): {_scaling_note(row.width, row.depth, row.paper_resolution)}",
    )


PHI = Option("phi", float, "EfficientNet: compound-scaling coefficient (any real >= 0; 0 is B0)", default=0.0)


def _make_compound(num_classes: int, phi: float) -> Network:
    config, resolution = compound(phi)
    scaling = (
        f"φ={phi:g}: depth α^φ={config.depth:.4f}, width β^φ={config.width:.4f}, "
        f"resolution 224·γ^φ={BASE_RESOLUTION * GAMMA**phi:.1f} -> {resolution} (α=1.2, β=1.1, γ=1.15)"
    )
    return Network(EfficientNet(config, num_classes), resolution, metadata={SCALING: scaling})


# fmt: off
#      eval  resize interpolation mean/std                     params       GMACs
V2_EVAL = {
    "s": (384, 384, "bilinear", IMAGENET_MEAN, IMAGENET_STD, 21_458_488,  8.366),
    "m": (480, 480, "bilinear", IMAGENET_MEAN, IMAGENET_STD, 54_139_356, 24.582),
    "l": (480, 480, "bicubic", (0.5,) * 3, (0.5,) * 3,       118_515_272, 56.080),
}
# fmt: on


def _v2(size: str) -> Architecture:
    resolution, resize, interpolation, mean, std, params, gmacs = V2_EVAL[size]
    return Architecture(
        name=f"efficientnet_v2_{size}",
        family="efficientnet_v2",
        make=lambda n: Network(EfficientNet(V2[size], n)),
        resolution=resolution,
        preprocess=Preprocess(resize, resolution, mean, std, interpolation),
        head="classifier.1",
        reference=f"torchvision.models.efficientnet_v2_{size}",
        paper="Tan & Le 2021, EfficientNetV2: Smaller Models and Faster Training",
        reference_params=params,
        reference_gmacs=gmacs,
        description=f"EfficientNetV2-{size.upper()} (torchvision): Fused-MBConv early stages without SE, head 1280",
    )


ARCHITECTURES = [
    *(_released(variant) for variant in RELEASED),
    Architecture(
        name="efficientnet",
        family="efficientnet",
        make=_make_compound,
        resolution=BASE_RESOLUTION,
        preprocess=Preprocess(256, 224, interpolation="bicubic"),
        head="classifier.1",
        reference="compound scaling of torchvision's efficientnet_b0 by pure powers (Tan & Le 2019, eq. 3)",
        paper="Tan & Le 2019, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
        description="EfficientNet at any --phi >= 0: depth 1.2^φ, width 1.1^φ, resolution 224·1.15^φ (φ=0 is B0)",
        options=(PHI,),
    ),
    *(_v2(size) for size in V2),
]
