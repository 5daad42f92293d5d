"""ResNet (He et al. 2015), torchvision's layout ("v1.5" = ResNet-B: stride on the 3×3).

A variant is a row of :data:`DEPTHS` — block type and blocks per stage — and a
:class:`ResNetConfig`; the ResNeXt, wide and "bag of tricks" variants are ``replace()`` of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphgen import nn
from graphgen.registry import Architecture, imagenet_eval, register

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


@dataclass(frozen=True)
class ResNetConfig:
    block: str
    layers: tuple[int, ...]
    groups: int = 1
    width_per_group: int = 64


def conv_bn(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A bias-free convolution with 'same' padding and the BatchNorm after it."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(out_channels)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, config: ResNetConfig) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(inplanes, planes, 3, stride)
        self.relu = nn.ReLU()
        self.conv2, self.bn2 = conv_bn(planes, planes, 3)
        self.downsample = _downsample(inplanes, planes, stride)

    def forward(self, op, x):
        out = self.relu(op, self.bn1(op, self.conv1(op, x)))
        out = self.bn2(op, self.conv2(op, out))
        identity = self.downsample(op, x) if self.downsample is not None else x
        return self.relu(op, nn.add(op, out, identity))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, config: ResNetConfig) -> None:
        super().__init__()
        width = int(planes * config.width_per_group / 64) * config.groups
        self.conv1, self.bn1 = conv_bn(inplanes, width, 1)
        self.conv2, self.bn2 = conv_bn(width, width, 3, stride, config.groups)
        self.conv3, self.bn3 = conv_bn(width, planes * self.expansion, 1)
        self.relu = nn.ReLU()
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)

    def forward(self, op, x):
        out = self.relu(op, self.bn1(op, self.conv1(op, x)))
        out = self.relu(op, self.bn2(op, self.conv2(op, out)))
        out = self.bn3(op, self.conv3(op, out))
        identity = self.downsample(op, x) if self.downsample is not None else x
        return self.relu(op, nn.add(op, out, identity))


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(*conv_bn(inplanes, outplanes, 1, stride))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig, num_classes: int) -> None:
        super().__init__()
        block = BLOCKS[config.block]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
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

    def forward(self, op, x):
        x = self.maxpool(op, self.relu(op, self.bn1(op, self.conv1(op, x))))
        for index in range(len(STAGE_PLANES)):
            x = getattr(self, f"layer{index + 1}")(op, x)
        return self.fc(op, self.flatten(op, self.avgpool(op, x)))


def _resnet(depth: int) -> Architecture:
    block, layers, params, gmacs = DEPTHS[depth]
    config = ResNetConfig(block, layers)
    return Architecture(
        f"resnet{depth}", "resnet", lambda n: ResNet(config, n), 224, imagenet_eval(224),
        head="fc", reference=f"torchvision.models.resnet{depth}",
        paper="He, Zhang, Ren, Sun 2015, Deep Residual Learning for Image Recognition",
        reference_params=params, reference_gmacs=gmacs,
        description=f"ResNet-{depth} (torchvision: ResNet-B, stride on the 3x3)",
    )  # fmt: skip


register(*(_resnet(depth) for depth in DEPTHS))
