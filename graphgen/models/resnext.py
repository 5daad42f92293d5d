"""ResNeXt (Xie et al. 2017): ResNet-B bottlenecks whose 3×3 is split into G groups of width d.

The inner width is int(planes · d / 64) · G (128 for ResNeXt-50 32×4d's first stage).
``--form grouped`` (default, torchvision's layout) builds the paper's form (c), one grouped 3×3;
``--form branches`` builds its form (a), G parallel paths 1×1 → 3×3 → 1×1 summed before bn3
(``layer1.0.branches.<g>.conv1|bn1|conv2|bn2|conv3``, merged by ``layer1.0.branches.sum``).
Both load the same torchvision checkpoint (the branches form slices it per path) and give the
same outputs.
"""

from __future__ import annotations

from dataclasses import replace

from graphgen.architecture import Architecture, imagenet_eval
from graphgen.models.resnet import DEPTHS, B, resnet_architecture

# fmt: off
#                      depth  G   d  torchvision params  GMACs  resize
VARIANTS = {
    "resnext50_32x4d":  (50,  32, 4,  25_028_904,  4.230, 256),
    "resnext101_32x8d": (101, 32, 8,  88_791_336, 16.414, 256),
    "resnext101_64x4d": (101, 64, 4,  83_455_272, 15.460, 232),  # its only weights evaluate at 232
}
# fmt: on


def _resnext(name: str) -> Architecture:
    depth, groups, width, params, gmacs, resize = VARIANTS[name]
    config = replace(B, layers=DEPTHS[depth][1], groups=groups, width_per_group=width)
    return resnet_architecture(
        name,
        config,
        reference=f"torchvision.models.{name}",
        params=params,
        gmacs=gmacs,
        family="resnext",
        paper="Xie, Girshick, Dollár, Tu, He 2017, Aggregated Residual Transformations",
        description=f"ResNeXt-{depth} {groups}x{width}d (--form branches: {groups} parallel paths)",
        preprocess=imagenet_eval(224, resize),
        form=True,
    )


ARCHITECTURES = [_resnext(name) for name in VARIANTS]
