"""Squeeze-and-Excitation networks (Hu, Shen, Sun 2018) in timm's ``ResNet`` layout.

Each block gates its residual branch channel-wise after the last BN, before the residual add:
global average pool → 1×1 conv to C/16 (bias) → ReLU → 1×1 conv to C (bias) → sigmoid → scale,
C being the block's output channels (``layer1.0.se.fc1``/``fc2``). SENet-154 is the paper's
ImageNet winner: SE-ResNeXt-152 64×4d with a deep 64-64-128 stem, a first 1×1 at half the inner
width, and strided 3×3 projection shortcuts. (timm's ``legacy_*`` ports from the Caffe release,
which stride the first 1×1, are not these.)
"""

from __future__ import annotations

from dataclasses import replace

from graphgen.architecture import Architecture, timm_eval
from graphgen.models.resnet import DEPTHS, B, resnet_architecture

SE = replace(B, se=True)
SENET154 = replace(
    SE, layers=DEPTHS[152][1], groups=64, width_per_group=4, stem="deep", stem_width=64, down_kernel=3, reduce_first=2
)
# fmt: off
#                        config                                           timm params  GMACs  crop_pct
VARIANTS = {
    "seresnet50":        (SE,                                             28_088_024,  4.11, 0.95),
    "seresnext50_32x4d": (replace(SE, groups=32, width_per_group=4),      27_559_896,  4.26, 0.875),
    "senet154":          (SENET154,                                      115_088_984, 20.77, 0.875),
}
# fmt: on
DESCRIPTIONS = {
    "seresnet50": "SE-ResNet-50 (SE after bn3, reduction 16 of the block output)",
    "seresnext50_32x4d": "SE-ResNeXt-50 32x4d",
    "senet154": "SENet-154: SE-ResNeXt-152 64x4d, 64-64-128 stem, half-width first 1x1, 3x3 projections",
}


def _senet(name: str) -> Architecture:
    config, params, gmacs, crop_pct = VARIANTS[name]
    return resnet_architecture(
        name,
        config,
        reference=f"timm.{name}",
        params=params,
        gmacs=gmacs,
        family="senet",
        paper="Hu, Shen, Sun 2018, Squeeze-and-Excitation Networks",
        description=DESCRIPTIONS[name],
        preprocess=timm_eval(224, crop_pct),
    )


ARCHITECTURES = [_senet(name) for name in VARIANTS]
