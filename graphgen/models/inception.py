"""Inception v3 (Szegedy et al. 2015, "Rethinking the Inception Architecture"), torchvision's version.

299×299 input; factorised convolutions (5×5 → two 3×3, n×n → 1×n then n×1); grid reductions that
concatenate a strided conv branch with a max-pool. BatchNorm eps 1e-3. The branch average pools
count the zero padding (torch's default, ``count_include_pad=True``; ONNX's default is 0).

As for GoogLeNet, torchvision's ``transform_input`` becomes the preprocessing (mean = std = 0.5)
and the train-only auxiliary classifier is the optional extra output ``aux_logits`` (``--aux``).
"""

from __future__ import annotations

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network
from graphgen.metadata import Preprocess
from graphgen.models.googlenet import AUX, HALF, BasicConv2d, with_aux
from graphgen.onnxscript_api import OpBuilder


def _branch_pool(op: OpBuilder, x: ir.Value) -> ir.Value:
    return nn.emit(
        op,
        "AveragePool",
        x,
        suffix="branch_pool_avg",
        kernel_shape=[3, 3],
        strides=[1, 1],
        pads=[1, 1, 1, 1],
        count_include_pad=1,
    )


def _max_pool(op: OpBuilder, x: ir.Value) -> ir.Value:
    return nn.emit(op, "MaxPool", x, suffix="branch_pool_max", kernel_shape=[3, 3], strides=[2, 2])


class InceptionA(nn.Module):
    """35×35: 1×1 | 1×1 → 5×5 | 1×1 → 3×3 → 3×3 | avg-pool → 1×1."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        b5 = self.branch5x5_2(op, self.branch5x5_1(op, x))
        b3 = self.branch3x3dbl_3(op, self.branch3x3dbl_2(op, self.branch3x3dbl_1(op, x)))
        pool = self.branch_pool(op, _branch_pool(op, x))
        return nn.concat(op, [self.branch1x1(op, x), b5, b3, pool])


class InceptionB(nn.Module):
    """35 → 17 grid reduction: 3×3/2 | 1×1 → 3×3 → 3×3/2 | max-pool/2."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, 2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, 2)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        b3 = self.branch3x3dbl_3(op, self.branch3x3dbl_2(op, self.branch3x3dbl_1(op, x)))
        return nn.concat(op, [self.branch3x3(op, x), b3, _max_pool(op, x)])


class InceptionC(nn.Module):
    """17×17 with 7×7 factorised into 1×7 and 7×1: 1×1 | 1×1 → 1×7 → 7×1 | 1×1 → (7×1 → 1×7)×2 | pool."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding)
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, row[0], padding=row[1])
        self.branch7x7_3 = BasicConv2d(c7, 192, col[0], padding=col[1])
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, row[0], padding=row[1])
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, row[0], padding=row[1])
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        b7 = x
        for conv in (self.branch7x7_1, self.branch7x7_2, self.branch7x7_3):
            b7 = conv(op, b7)
        dbl = x
        for i in range(1, 6):
            dbl = getattr(self, f"branch7x7dbl_{i}")(op, dbl)
        pool = self.branch_pool(op, _branch_pool(op, x))
        return nn.concat(op, [self.branch1x1(op, x), b7, dbl, pool])


class InceptionD(nn.Module):
    """17 → 8 grid reduction: 1×1 → 3×3/2 | 1×1 → 1×7 → 7×1 → 3×3/2 | max-pool/2."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, 2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, 2)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        b3 = self.branch3x3_2(op, self.branch3x3_1(op, x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(op, b7)
        return nn.concat(op, [b3, b7, _max_pool(op, x)])


class InceptionE(nn.Module):
    """8×8 with expanded filter banks: 1×1 | 1×1 → [1×3, 3×1] | 1×1 → 3×3 → [1×3, 3×1] | pool."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        b3 = self.branch3x3_1(op, x)
        b3 = nn.concat(op, [self.branch3x3_2a(op, b3), self.branch3x3_2b(op, b3)], suffix="branch3x3_cat")
        dbl = self.branch3x3dbl_2(op, self.branch3x3dbl_1(op, x))
        dbl = nn.concat(op, [self.branch3x3dbl_3a(op, dbl), self.branch3x3dbl_3b(op, dbl)], suffix="branch3x3dbl_cat")
        pool = self.branch_pool(op, _branch_pool(op, x))
        return nn.concat(op, [self.branch1x1(op, x), b3, dbl, pool])


class InceptionAux(nn.Module):
    """On the 17×17 grid: 5×5/3 avg-pool → 1×1 (128) → 5×5 (768) → global pool → fc."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, 3)
        self.conv0 = BasicConv2d(cin, 128, 1)
        self.conv1 = BasicConv2d(128, 768, 5)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(768, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        x = self.conv1(op, self.conv0(op, self.pool(op, x)))
        return self.fc(op, self.flatten(op, self.avgpool(op, x)))


# fmt: off
STEM: list[tuple[str, int, int, int, int, int] | tuple[str, str]] = [
    # name            in   out  kernel stride padding   ("M": 3×3/2 max-pool)
    ("Conv2d_1a_3x3", 3,   32,  3,     2,     0),
    ("Conv2d_2a_3x3", 32,  32,  3,     1,     0),
    ("Conv2d_2b_3x3", 32,  64,  3,     1,     1),
    ("maxpool1",      "M"),
    ("Conv2d_3b_1x1", 64,  80,  1,     1,     0),
    ("Conv2d_4a_3x3", 80, 192,  3,     1,     0),
    ("maxpool2",      "M"),
]
MIXED = [
    # name        block       in    7×7 or pool-branch width
    ("Mixed_5b", InceptionA, 192,  32),
    ("Mixed_5c", InceptionA, 256,  64),
    ("Mixed_5d", InceptionA, 288,  64),
    ("Mixed_6a", InceptionB, 288,  None),
    ("Mixed_6b", InceptionC, 768,  128),
    ("Mixed_6c", InceptionC, 768,  160),
    ("Mixed_6d", InceptionC, 768,  160),
    ("Mixed_6e", InceptionC, 768,  192),
    ("Mixed_7a", InceptionD, 768,  None),
    ("Mixed_7b", InceptionE, 1280, None),
    ("Mixed_7c", InceptionE, 2048, None),
]
# fmt: on
AUX_TAP = "Mixed_6e"


class Inception3(nn.Module):
    def __init__(self, num_classes: int, aux: bool = False) -> None:
        super().__init__()
        for row in STEM:
            if len(row) == 2:  # "M"
                setattr(self, row[0], nn.MaxPool2d(3, 2))
            else:
                name, cin, cout, kernel, stride, padding = row
                setattr(self, name, BasicConv2d(cin, cout, kernel, stride, padding))
        for name, block, cin, width in MIXED:
            setattr(self, name, block(cin, width) if width is not None else block(cin))
        self.aux = aux
        if aux:
            self.AuxLogits = InceptionAux(768, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value | tuple[ir.Value, ir.Value]:
        for name, *_ in STEM:
            x = getattr(self, name)(op, x)
        aux_logits: ir.Value | None = None
        for name, *_ in MIXED:
            x = getattr(self, name)(op, x)
            if self.aux and name == AUX_TAP:
                aux_logits = self.AuxLogits(op, x)
        logits = self.fc(op, self.flatten(op, self.avgpool(op, x)))
        return (logits, aux_logits) if aux_logits is not None else logits


def _inception_v3(num_classes: int, aux: bool) -> Network:
    return with_aux(Inception3(num_classes, aux), aux, ("aux_logits",), ("AuxLogits.",))


ARCHITECTURES = [
    Architecture(
        name="inception_v3",
        family="inception",
        make=_inception_v3,
        resolution=299,
        preprocess=Preprocess(342, 299, HALF, HALF),
        head="fc",
        aux_heads=("AuxLogits.fc",),
        reference="torchvision.models.inception_v3",
        paper="Szegedy, Vanhoucke, Ioffe, Shlens, Wojna 2015, Rethinking the Inception Architecture",
        reference_params=23_834_568,
        reference_gmacs=5.713,
        description="Inception v3 (torchvision; 299x299, BN eps 1e-3, branch avg-pools count padding)",
        options=(AUX,),
        reference_kwargs={"aux_logits": False, "init_weights": False, "transform_input": False},
    )
]
