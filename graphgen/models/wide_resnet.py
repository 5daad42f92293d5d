"""Wide Residual Networks (Zagoruyko & Komodakis 2016): fewer layers, k times the channels.

* ``wide_resnet50_2`` / ``wide_resnet101_2`` (torchvision): ResNet-B bottlenecks whose inner
  1×1-3×3 width is doubled (``width_per_group=128``); the outer 1×1 widths stay as in ResNet.
* ``wrn28_10``: the paper's CIFAR network WRN-28-10 (depth 28 = 6n + 4, n = 4 blocks per group,
  widen factor k = 10, 10 classes, 32×32 input). Pre-activation blocks BN-ReLU-3×3-BN-ReLU-3×3;
  where the width changes, a bias-free 1×1 shortcut conv reads the block's pre-activated input.
  Neither torchvision nor timm has it; the parameter names are those of the authors' PyTorch code
  (szagoruyko/wide-residual-networks ``pytorch/resnet.py``: ``conv0``, ``group0.block0.bn0``,
  ``group0.block0.convdim``, ``bn``, ``fc``), so a checkpoint of that code loads by key.

WRN-28-10's parameter count (the paper rounds it to 36.5M), conv weights then BN γ/β::

    stem 3·16·9                                                         =        432
    group0 (160): 16·160·9 + 160·160·9 + 16·160 (convdim) + 2·16 + 2·160
                  + 3 × (2 · 160·160·9 + 4·160)                         =  1,640,672
    group1 (320): 160·320·9 + 320·320·9 + 160·320 + 2·160 + 2·320
                  + 3 × (2 · 320·320·9 + 4·320)                         =  6,968,000
    group2 (640): 320·640·9 + 640·640·9 + 320·640 + 2·320 + 2·640
                  + 3 × (2 · 640·640·9 + 4·640)                         = 27,862,400
    final BN 2·640 + fc 640·10 + 10                                     =      7,690
                                                                  total = 36,479,194
"""

from __future__ import annotations

from dataclasses import replace

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network
from graphgen.metadata import Preprocess
from graphgen.models.resnet import DEPTHS, B, resnet_architecture
from graphgen.onnxscript_api import OpBuilder

# fmt: off
#                      depth  torchvision params  GMACs
TORCHVISION = {
    "wide_resnet50_2":  (50,   68_883_240,  11.398),
    "wide_resnet101_2": (101, 126_886_696,  22.753),
}
# fmt: on
WRN_DEPTH, WRN_WIDEN, WRN_STEM = 28, 10, 16
WRN_PARAMS = 36_479_194  # derived in the module docstring; the paper says 36.5M
CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)  # the authors' normalisation
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
PAPER = "Zagoruyko & Komodakis 2016, Wide Residual Networks"


def _conv(op: OpBuilder, x: ir.Value, weight: nn.Parameter, stride: int, name: str) -> ir.Value:
    """A bias-free square convolution with 'same' padding, weight held by the calling block."""
    kernel = weight.shape[2] if weight.shape is not None else None
    if not isinstance(kernel, int):
        raise ValueError(f"weight {weight.name} has no static kernel size")
    pad = kernel // 2
    return nn.emit(
        op,
        "Conv",
        x,
        weight,
        suffix=name,
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=[pad] * 4,
    )


def _conv_weight(cin: int, cout: int, kernel: int) -> nn.Parameter:
    return nn.Parameter([cout, cin, kernel, kernel], nn.Init.FAN_IN_UNIFORM, fan_in=cin * kernel * kernel)


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.bn0 = nn.BatchNorm2d(cin)
        self.conv0 = _conv_weight(cin, cout, 3)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv1 = _conv_weight(cout, cout, 3)
        self.convdim = _conv_weight(cin, cout, 1) if cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        activated = self.relu(op, self.bn0(op, x))
        out = _conv(op, activated, self.conv0, self.stride, "conv0")
        out = _conv(op, self.relu(op, self.bn1(op, out)), self.conv1, 1, "conv1")
        # The projection reads the activated input, as the authors' code does (not the raw x).
        shortcut = _conv(op, activated, self.convdim, self.stride, "convdim") if self.convdim is not None else x
        return nn.add(op, out, shortcut)


class Group(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int, stride: int) -> None:
        super().__init__()
        self.count = blocks
        for i in range(blocks):
            setattr(self, f"block{i}", PreActBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1))

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        for i in range(self.count):
            x = getattr(self, f"block{i}")(op, x)
        return x


class WideResNetCifar(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        blocks = (depth - 4) // 6
        widths = [WRN_STEM * widen * 2**i for i in range(3)]
        self.conv0 = _conv_weight(3, WRN_STEM, 3)
        cin = WRN_STEM
        for index, width in enumerate(widths):
            setattr(self, f"group{index}", Group(cin, width, blocks, 1 if index == 0 else 2))
            cin = width
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        # The authors pool 8×8 (the whole map at 32×32); a global pool also serves other resolutions.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        x = _conv(op, x, self.conv0, 1, "conv0")
        for index in range(3):
            x = getattr(self, f"group{index}")(op, x)
        x = self.relu(op, self.bn(op, x))
        return self.fc(op, self.flatten(op, self.pool(op, x)))


def _torchvision(name: str) -> Architecture:
    depth, params, gmacs = TORCHVISION[name]
    return resnet_architecture(
        name,
        replace(B, layers=DEPTHS[depth][1], width_per_group=128),
        reference=f"torchvision.models.{name}",
        params=params,
        gmacs=gmacs,
        family="wide_resnet",
        paper=PAPER,
        description=f"Wide ResNet-{depth}-2: ResNet-{depth} with the bottleneck's inner width doubled",
    )


ARCHITECTURES = [
    *(_torchvision(name) for name in TORCHVISION),
    Architecture(
        name="wrn28_10",
        family="wide_resnet",
        make=lambda n: Network(WideResNetCifar(WRN_DEPTH, WRN_WIDEN, n)),
        resolution=32,
        preprocess=Preprocess(32, 32, CIFAR10_MEAN, CIFAR10_STD),
        head="fc",
        reference="szagoruyko/wide-residual-networks pytorch/resnet.py (the authors' code; not in torchvision/timm)",
        paper=PAPER,
        reference_params=WRN_PARAMS,
        description="WRN-28-10 for CIFAR-10: pre-activation blocks, widths 160/320/640, 32x32 input",
        num_classes=10,
    ),
]
