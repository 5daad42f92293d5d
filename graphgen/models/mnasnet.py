"""MnasNet (Tan et al. 2019), the mobile network found by platform-aware search, as torchvision builds it.

torchvision implements the paper's B1 variant: no squeeze-and-excitation, ReLU throughout. A
3×3/2 stem and a depthwise-separable layer (3×3 depthwise, linear 1×1 to 16 channels), then six
stacks of inverted residuals (1×1 expansion, 3×3 or 5×5 depthwise, linear 1×1 projection; the
first block of a stack changes shape and has no residual), a 1×1 conv to 1280 and a dropout-0.2
classifier. EfficientNet-B0 grew from the A1 variant of the same search (with SE and swish).

The depth multiplier α scales every width but the final 1280, rounded to a multiple of 8 that is
never more than 10% below c·α (torchvision's ``_round_to_multiple_of(c·α, 8, 0.9)``, the same
rule as :func:`graphgen.nn.make_divisible`). BatchNorm keeps torch's eps 1e-5; its momentum
(1 − 0.9997, the paper's TensorFlow decay) only matters in training.

Keys mirror torchvision's ``state_dict``: one flat ``layers`` sequence (``layers.0`` the stem
conv, ``layers.8``…``layers.13`` the stacks, ``layers.8.0.layers.3`` a depthwise conv) and
``classifier.1``. **Checkpoint versions**: torchvision's MNASNet is version 2, which scales the
stem too; version-1 checkpoints (saved before that change) keep a 32/16-channel stem at every α.
At α = 1 the two agree; for other widths graphgen builds version 2, the form of every weight
torchvision publishes, and names the cause when handed a version-1 checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network, imagenet_eval
from graphgen.checkpoint import CheckpointError, StateDict
from graphgen.onnxscript_api import OpBuilder


class Stack(NamedTuple):
    expand: int  # t: hidden channels = t × input
    kernel: int  # k of the depthwise conv
    stride: int  # s of the first block
    out: int  # c at α = 1
    repeats: int  # n


# fmt: off
# MnasNet-B1, torchvision's stacks (the paper's Figure 7 without SE).
STEM, SEPARABLE, HEAD = 32, 16, 1280  # the head is not scaled by α
STACKS = (
    #     t  k  s  c    n
    Stack(3, 3, 2, 24,  3),
    Stack(3, 5, 2, 40,  3),
    Stack(6, 5, 2, 80,  3),
    Stack(6, 3, 1, 96,  2),
    Stack(6, 5, 2, 192, 4),
    Stack(6, 3, 1, 320, 1),
)


class Variant(NamedTuple):
    alpha: float
    resize: int  # torchvision's evaluation resize before the 224 crop
    params: int  # torchvision num_params
    gmacs: float  # torchvision _ops
    top1: float  # ImageNet-1k acc@1 of torchvision's weights


#                            α     resize params     GMACs  acc@1
VARIANTS = {
    "mnasnet0_5":  Variant(0.5,  256, 2_218_512, 0.104, 67.734),
    "mnasnet0_75": Variant(0.75, 232, 3_170_208, 0.215, 71.180),  # torchvision's newer recipe, resize 232
    "mnasnet1_0":  Variant(1.0,  256, 4_383_312, 0.314, 73.456),
    "mnasnet1_3":  Variant(1.3,  232, 6_282_256, 0.526, 76.506),  # torchvision's newer recipe, resize 232
}
# fmt: on


def scaled(channels: int, alpha: float) -> int:
    """A width at depth multiplier ``alpha``: a multiple of 8, never more than 10% below channels·alpha."""
    return nn.make_divisible(channels * alpha, 8)


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """A bias-free conv and its BatchNorm, as two entries of a flat torchvision ``Sequential``."""
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class InvertedResidual(nn.Module):
    """torchvision's ``_InvertedResidual``: keys ``layers.0``…``layers.7``; always expands (t is 3 or 6)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.layers = nn.Sequential(
            *conv_bn(cin, hidden),
            nn.ReLU(),
            *conv_bn(hidden, hidden, kernel, stride, groups=hidden),
            nn.ReLU(),
            *conv_bn(hidden, cout),  # linear projection: no activation
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        out = self.layers(op, x)
        return nn.add(op, out, x) if self.residual else out


def stack(cin: int, cout: int, row: Stack) -> nn.Sequential:
    blocks = [
        InvertedResidual(cin if i == 0 else cout, cout, row.expand, row.kernel, row.stride if i == 0 else 1)
        for i in range(row.repeats)
    ]
    return nn.Sequential(*blocks)


class MNASNet(nn.Module):
    def __init__(self, alpha: float, num_classes: int) -> None:
        super().__init__()
        stem, separable = scaled(STEM, alpha), scaled(SEPARABLE, alpha)
        layers: list[nn.Module] = [
            *conv_bn(3, stem, 3, 2),
            nn.ReLU(),
            *conv_bn(stem, stem, 3, groups=stem),  # depthwise-separable, no residual
            nn.ReLU(),
            *conv_bn(stem, separable),
        ]
        cin = separable
        for row in STACKS:
            layers.append(stack(cin, scaled(row.out, alpha), row))
            cin = scaled(row.out, alpha)
        layers += [*conv_bn(cin, HEAD), nn.ReLU()]
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # torchvision's x.mean([2, 3])
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(HEAD, num_classes))
        self.stem = stem

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        x = self.avgpool(op, self.layers(op, x))
        return self.classifier(op, self.flatten(op, x))

    def refuse_version_1(self, state: StateDict) -> StateDict:
        """A version-1 checkpoint's fixed 32-channel stem cannot load into a scaled one: say so, not just 'shapes'."""
        found = state.get("layers.0.weight")
        if found is not None and found.shape[0] == STEM != self.stem:
            raise CheckpointError(
                f"a version-1 MNASNet checkpoint (saved before torchvision scaled the stem): its stem has "
                f"{STEM} channels at every width, this width's has {self.stem}; graphgen builds version 2, "
                "the form of all of torchvision's published MNASNet weights"
            )
        return state


def _make(alpha: float) -> Callable[[int], Network]:
    def make(num_classes: int) -> Network:
        module = MNASNet(alpha, num_classes)
        return Network(module, adapt_state_dict=module.refuse_version_1)

    return make


ARCHITECTURES = [
    Architecture(
        name=name,
        family="mnasnet",
        make=_make(row.alpha),
        resolution=224,
        preprocess=imagenet_eval(224, row.resize),
        head="classifier.1",
        reference=f"torchvision.models.{name}",
        paper="Tan et al. 2019, MnasNet: Platform-Aware Neural Architecture Search for Mobile",
        reference_params=row.params,
        reference_gmacs=row.gmacs,
        description=f"MnasNet-B1 (torchvision), depth multiplier {row.alpha:g}: inverted residuals, no SE; "
        f"ImageNet top-1 {row.top1:.1f}% with torchvision's weights",
    )
    for name, row in VARIANTS.items()
]
