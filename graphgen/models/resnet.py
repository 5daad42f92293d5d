"""ResNet (He et al. 2015) and its descendants, all one :class:`ResNetConfig` apart.

The default config is torchvision's ResNet ("v1.5" = ResNet-B of "Bag of Tricks": stride on the
3×3). Every other member is a ``replace()`` of it: the original Caffe form (stride on the first
1×1), timm's C (three-3×3 stem) and D (C + average-pool projection), ResNeXt (grouped 3×3, or
``--form branches``: the paper's G parallel paths), wide ResNets (wider inner 3×3), SE-ResNet /
SE-ResNeXt / SENet-154 (squeeze-and-excitation). Parameter names follow torchvision's and timm's
``ResNet`` (the two agree), so their checkpoints load by key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network, Option, imagenet_eval, timm_eval
from graphgen.checkpoint import StateDict
from graphgen.errors import OptionError
from graphgen.metadata import Preprocess
from graphgen.onnxscript_api import OpBuilder

# fmt: off
#        block         blocks per stage   torchvision params  GMACs
DEPTHS = {
    18:  ("basic",      (2, 2, 2, 2),     11_689_512,  1.814),
    34:  ("basic",      (3, 4, 6, 3),     21_797_672,  3.664),
    50:  ("bottleneck", (3, 4, 6, 3),     25_557_032,  4.089),
    101: ("bottleneck", (3, 4, 23, 3),    44_549_160,  7.801),
    152: ("bottleneck", (3, 8, 36, 3),    60_192_808, 11.514),
}
# fmt: on
STAGE_PLANES = (64, 128, 256, 512)
SE_REDUCTION = 16
HE_2015 = "He, Zhang, Ren, Sun 2015, Deep Residual Learning for Image Recognition"
BAG_OF_TRICKS = "He, Zhang, Zhang, Zhang, Xie, Li 2019, Bag of Tricks for Image Classification with CNNs"


@dataclass(frozen=True)
class ResNetConfig:
    block: str  # "basic" (two 3×3) or "bottleneck" (1×1, 3×3, 1×1)
    layers: tuple[int, ...]
    groups: int = 1  # ResNeXt cardinality of the bottleneck 3×3
    width_per_group: int = 64  # inner width = int(planes · width_per_group / 64) · groups
    stem: str = "7x7"  # or "deep": 3×3 convs of stem_width, stem_width, 2·stem_width
    stem_width: int = 64
    stem_pool: str = "torch"  # "caffe": 3×3/2 max-pool unpadded, rounding up (same size, windows shifted)
    stride_on: str = "3x3"  # "1x1": the original Caffe ResNet strides the first 1×1 instead
    downsample: str = "conv"  # "avg": 2×2 average pool, then a stride-1 1×1 projection (ResNet-D)
    down_kernel: int = 1  # SENet-154 projects with a strided 3×3
    reduce_first: int = 1  # SENet-154's first 1×1 has half the inner width
    se: bool = False  # squeeze-and-excitation after the last BN, before the residual add
    form: str = "grouped"  # "branches": ResNeXt's G parallel 1×1 → 3×3 → 1×1 paths, summed


B = ResNetConfig("bottleneck", DEPTHS[50][1])  # the layers are replaced per depth
C = replace(B, stem="deep", stem_width=32)
D = replace(C, downsample="avg")


def conv_bn(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A bias-free convolution with 'same' padding and the BatchNorm after it."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(out_channels)


class SqueezeExcite(nn.Module):
    """x · sigmoid(fc2(relu(fc1(mean(x))))), the 1×1 convs with bias (timm's ``SEModule``)."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION) -> None:
        super().__init__()
        # timm rounds to the nearest multiple of 8 (never below 8); exact for every width used here
        reduced = max(8, int(channels / reduction + 4) // 8 * 8)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        squeezed = nn.emit(op, "GlobalAveragePool", x, suffix="pool")
        gate = self.gate(op, self.fc2(op, self.act(op, self.fc1(op, squeezed))))
        return nn.emit(op, "Mul", x, gate, suffix="scale")


def _downsample(inplanes: int, outplanes: int, stride: int, config: ResNetConfig) -> nn.Sequential | None:
    """The projection shortcut, where the residual changes shape."""
    if stride == 1 and inplanes == outplanes:
        return None
    if config.downsample == "avg":
        # ResNet-D: a strided 1×1 would skip 3/4 of the input; average it first instead
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        return nn.Sequential(pool, *conv_bn(inplanes, outplanes, 1))
    kernel = config.down_kernel if stride > 1 else 1
    return nn.Sequential(*conv_bn(inplanes, outplanes, kernel, stride))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, config: ResNetConfig) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(inplanes, planes, 3, stride)
        self.relu = nn.ReLU()
        self.conv2, self.bn2 = conv_bn(planes, planes, 3)
        self.se = SqueezeExcite(planes) if config.se else None
        self.downsample = _downsample(inplanes, planes, stride, config)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        out = self.relu(op, self.bn1(op, self.conv1(op, x)))
        out = self.bn2(op, self.conv2(op, out))
        if self.se is not None:
            out = self.se(op, out)
        identity = self.downsample(op, x) if self.downsample is not None else x
        return self.relu(op, nn.add(op, out, identity))


class ResNeXtBranch(nn.Module):
    """One of the G paths of ResNeXt's form (a): 1×1 (C→d) → 3×3 (d→d) → 1×1 (d→C′), BN+ReLU inside."""

    def __init__(self, inplanes: int, first: int, width: int, outplanes: int, strides: tuple[int, int]) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(inplanes, first, 1, strides[0])
        self.relu = nn.ReLU()
        self.conv2, self.bn2 = conv_bn(first, width, 3, strides[1])
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        out = self.relu(op, self.bn1(op, self.conv1(op, x)))
        out = self.relu(op, self.bn2(op, self.conv2(op, out)))
        return self.conv3(op, out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, config: ResNetConfig) -> None:
        super().__init__()
        width = int(planes * config.width_per_group / 64) * config.groups
        first = width // config.reduce_first
        outplanes = planes * self.expansion
        strides = (stride, 1) if config.stride_on == "1x1" else (1, stride)
        self.branches = None
        if config.form == "branches":
            # bn3 acts on the sum of the paths, exactly where the grouped form has it (paper §3.3)
            g = config.groups
            paths: list[nn.Module] = [
                ResNeXtBranch(inplanes, first // g, width // g, outplanes, strides) for _ in range(g)
            ]
            self.branches = nn.ModuleList(paths)
        else:
            self.conv1, self.bn1 = conv_bn(inplanes, first, 1, strides[0])
            self.conv2, self.bn2 = conv_bn(first, width, 3, strides[1], config.groups)
            self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.se = SqueezeExcite(outplanes) if config.se else None
        self.relu = nn.ReLU()
        self.downsample = _downsample(inplanes, outplanes, stride, config)

    def _transform(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        if self.branches is not None:
            return nn.emit(op, "Sum", *(path(op, x) for path in self.branches), suffix="branches.sum")
        out = self.relu(op, self.bn1(op, self.conv1(op, x)))
        out = self.relu(op, self.bn2(op, self.conv2(op, out)))
        return self.conv3(op, out)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        out = self.bn3(op, self._transform(op, x))
        if self.se is not None:
            out = self.se(op, out)
        identity = self.downsample(op, x) if self.downsample is not None else x
        return self.relu(op, nn.add(op, out, identity))


BLOCKS: dict[str, type[BasicBlock | Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _stem(config: ResNetConfig) -> tuple[nn.Module, int]:
    """``conv1`` and its output channels (``bn1`` follows it in either form)."""
    if config.stem == "7x7":
        return nn.Conv2d(3, 64, 7, 2, 3, bias=False), 64
    width = config.stem_width
    deep = nn.Sequential(
        *conv_bn(3, width, 3, 2),
        nn.ReLU(),
        *conv_bn(width, width, 3),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, 1, 1, bias=False),
    )
    return deep, 2 * width


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig, num_classes: int) -> None:
        super().__init__()
        if config.form == "branches" and config.groups == 1:
            raise OptionError("--form branches needs a grouped (ResNeXt) network; this one has groups=1")
        self.config = config
        block = BLOCKS[config.block]
        self.conv1, inplanes = _stem(config)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU()
        caffe = config.stem_pool == "caffe"
        self.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True) if caffe else nn.MaxPool2d(3, 2, 1)
        for index, (planes, blocks) in enumerate(zip(STAGE_PLANES, config.layers)):
            stride = 1 if index == 0 else 2
            stage = []
            for i in range(blocks):
                stage.append(block(inplanes, planes, stride if i == 0 else 1, config))
                inplanes = planes * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        x = self.maxpool(op, self.relu(op, self.bn1(op, self.conv1(op, x))))
        for index in range(len(STAGE_PLANES)):
            x = getattr(self, f"layer{index + 1}")(op, x)
        return self.fc(op, self.flatten(op, self.avgpool(op, x)))

    def adapt_state_dict(self, state: StateDict) -> StateDict:
        """The branches form loads the grouped form's checkpoint: its weights are sliced per path."""
        if self.config.form != "branches":
            return state
        blocks = [f"layer{s + 1}.{b}." for s, n in enumerate(self.config.layers) for b in range(n)]
        return split_grouped_state(state, blocks, self.config.groups)


def split_grouped_state(state: StateDict, blocks: list[str], groups: int) -> StateDict:
    """Grouped bottleneck keys → per-path keys, without touching ``state``.

    Path g takes rows g·d…(g+1)·d−1 of conv1, bn1, conv2 and bn2 (a group-G 3×3 reads exactly
    its own input rows) and columns g·d…(g+1)·d−1 of conv3; bn3 is shared. A checkpoint that
    already has per-path keys passes through unchanged.
    """
    out = dict(state)
    for block in blocks:
        if block + "conv1.weight" not in state:
            continue
        for name, axis in (("conv1", 0), ("bn1", 0), ("conv2", 0), ("bn2", 0), ("conv3", 1)):
            for key in [k for k in state if k.startswith(f"{block}{name}.")]:
                field = key[len(block) + len(name) + 1 :]
                array = out.pop(key)
                if field == "num_batches_tracked":
                    continue  # training bookkeeping, not split
                for g, part in enumerate(np.split(array, groups, axis=axis)):
                    out[f"{block}branches.{g}.{name}.{field}"] = part
    return out


FORM = Option(
    "form", str, "ResNeXt: grouped convolution or G parallel branches", ("grouped", "branches"), default="grouped"
)


def resnet_architecture(
    name: str,
    config: ResNetConfig,
    *,
    reference: str,
    params: int,
    gmacs: float | None,
    description: str,
    family: str = "resnet",
    paper: str = HE_2015,
    resolution: int = 224,
    preprocess: Preprocess | None = None,
    form: bool = False,
) -> Architecture:
    """An :class:`Architecture` whose module is ``ResNet(config)``; ``form``: it offers ``--form`` (ResNeXt)."""

    def network(config: ResNetConfig, num_classes: int) -> Network:
        module = ResNet(config, num_classes)
        return Network(module, adapt_state_dict=module.adapt_state_dict)

    def make(num_classes: int) -> Network:
        return network(config, num_classes)

    def make_in_form(num_classes: int, form: str) -> Network:
        return network(replace(config, form=form), num_classes)

    return Architecture(
        name=name,
        family=family,
        make=make_in_form if form else make,
        resolution=resolution,
        preprocess=preprocess or imagenet_eval(resolution),
        head="fc",
        reference=reference,
        paper=paper,
        reference_params=params,
        reference_gmacs=gmacs,
        description=description,
        options=(FORM,) if form else (),
    )


def _depth(depth: int, base: ResNetConfig = B) -> ResNetConfig:
    block, layers, _, _ = DEPTHS[depth]
    return replace(base, block=block, layers=layers)


# timm's C/D variants, (params, GMACs at the resolution, resolution, crop_pct) from timm's
# results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv and its pretrained configs
# fmt: off
TIMM_TWEAKS = {
    "resnet18d":  (D, 18,  11_708_744,  2.06, 224, 0.875),
    "resnet34d":  (D, 34,  21_816_904,  3.91, 224, 0.875),
    "resnet50c":  (C, 50,  25_576_264,  4.35, 224, 0.875),
    "resnet50d":  (D, 50,  25_576_264,  4.35, 224, 0.875),
    "resnet101c": (C, 101, 44_568_392,  8.08, 224, 0.875),
    "resnet101d": (D, 101, 44_568_392, 10.55, 256, 0.95),
    "resnet152c": (C, 152, 60_212_040, 11.80, 224, 0.875),
    "resnet152d": (D, 152, 60_212_040, 15.41, 256, 0.95),
}
# fmt: on


def _registrations() -> list[Architecture]:
    archs = []
    for depth, (_, _, params, gmacs) in DEPTHS.items():
        archs.append(
            resnet_architecture(
                f"resnet{depth}",
                _depth(depth),
                reference=f"torchvision.models.resnet{depth}",
                params=params,
                gmacs=gmacs,
                description=f"ResNet-{depth} (torchvision: ResNet-B, stride on the 3x3)",
            )
        )
        if DEPTHS[depth][0] == "bottleneck":
            # The paper's own figures (3.8/7.6/11.3 G multiply-adds) are rounded too far to check to 1%.
            archs.append(
                resnet_architecture(
                    f"resnet{depth}_v1",
                    replace(_depth(depth), stride_on="1x1", stem_pool="caffe"),
                    reference=f"KaimingHe/deep-residual-networks ResNet-{depth}-deploy.prototxt (= torchvision "
                    f"resnet{depth} with the stride on the first 1x1 and Caffe's unpadded ceil-mode pool1)",
                    params=params,
                    gmacs=None,
                    description=f"ResNet-{depth} as He et al. released it in Caffe: stride 2 on the first 1x1 "
                    "of each downsampling bottleneck, unpadded ceil-mode pool1 (torchvision keys)",
                )
            )
    for name, (base, depth, params, gmacs, resolution, crop_pct) in TIMM_TWEAKS.items():
        tweak = "three-3x3 stem" + (", 2x2 avg-pool before a stride-1 projection" if base is D else "")
        archs.append(
            resnet_architecture(
                name,
                _depth(depth, base),
                reference=f"timm.{name}",
                params=params,
                gmacs=gmacs,
                description=f"ResNet-{depth}-{name[-1].upper()} ({tweak})",
                paper=BAG_OF_TRICKS,
                resolution=resolution,
                preprocess=timm_eval(resolution, crop_pct),
            )
        )
    return archs


ARCHITECTURES = _registrations()
