"""RepVGG (Ding et al. 2021): a multi-branch network for training that is a plain VGG at inference.

Each block sums three branches — 3×3 conv + BN, 1×1 conv + BN, and (where the block keeps its
shape: stride 1, in = out channels) a lone BN on the input — then applies ReLU. Because every
branch is linear up to the sum, the trained block is exactly one 3×3 conv with bias (paper
Eq. 3): ``--deploy`` builds that form natively, with timm's ``reparam_conv`` keys, so a
checkpoint from ``timm.utils.reparameterize_model`` loads into it.

Training-form graph of a block (node names are timm's module paths)::

    x ─ stages.1.0.conv_kxk.conv ─ stages.1.0.conv_kxk.bn ─┐
    x ─ stages.1.0.conv_1x1.conv ─ stages.1.0.conv_1x1.bn ─┴ stages.1.0.add ─┐
    x ─ stages.1.0.identity (BatchNormalization) ────────────────────────────┴ stages.1.0.add_identity ─ stages.1.0.act (Relu)

(after the default BatchNorm folding the two conv branches are Convs with bias; the identity BN
stays). No max-pool: the stem is itself a stride-2 block. The gN variants use N groups in the
3×3 and 1×1 convs of every second block (0-based stage-block index odd: the official code's
layers 2, 4, …, 26, counting from 1 after the stem). BN eps 1e-5.
"""

from __future__ import annotations

from typing import NamedTuple

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network, Option, imagenet_eval
from graphgen.onnxscript_api import OpBuilder

A_DEPTHS, B_DEPTHS = (2, 4, 14, 1), (4, 6, 16, 1)
BASE_WIDTHS = (64, 128, 256, 512)
DEPLOY = Option("deploy", bool, "RepVGG, ParNet: the fused single-branch form, built natively")


class Variant(NamedTuple):
    depths: tuple[int, ...]
    a: float  # width multiplier of the first three stages
    b: float  # width multiplier of the last stage
    groups: int
    train_params: int  # timm / official repository
    deploy_params: int
    train_gmacs: float | None  # computed conv MACs at 224
    deploy_gmacs: float | None


# fmt: off
#                        depths    a    b     g  train params  deploy params  GMACs train / deploy
VARIANTS = {
    "a0":   Variant(A_DEPTHS, 0.75, 2.5,  1,   9_108_968,   8_309_384,  1.513,  1.361),
    "a1":   Variant(A_DEPTHS, 1.0,  2.5,  1,  14_092_264,  12_789_864,  2.626,  2.364),
    "a2":   Variant(A_DEPTHS, 1.5,  2.75, 1,  28_210_600,  25_499_944,  5.685,  5.117),
    "b0":   Variant(B_DEPTHS, 1.0,  2.5,  1,  15_817_960,  14_339_048,  3.397,  3.058),
    "b1":   Variant(B_DEPTHS, 2.0,  4.0,  1,  57_415_016,  51_829_480, 13.128, 11.815),
    "b1g2": Variant(B_DEPTHS, 2.0,  4.0,  2,  45_782_376,  41_360_104,  None,   None),
    "b1g4": Variant(B_DEPTHS, 2.0,  4.0,  4,  39_966_056,  36_125_416,  None,   None),
    "b2":   Variant(B_DEPTHS, 2.5,  5.0,  1,  89_022_376,  80_315_112, 20.418, 18.377),
    "b2g4": Variant(B_DEPTHS, 2.5,  5.0,  4,  61_758_376,  55_777_512,  None,   None),
    "b3":   Variant(B_DEPTHS, 3.0,  5.0,  1, 123_085_288, 110_960_872, 29.121, 26.209),
    "b3g4": Variant(B_DEPTHS, 3.0,  5.0,  4,  83_825_128,  75_626_728,  None,   None),
}
# fmt: on


class RepVggBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int, deploy: bool) -> None:
        super().__init__()
        self.deploy = deploy
        if deploy:
            self.reparam_conv = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=True)
        else:
            self.identity = nn.BatchNorm2d(cin) if stride == 1 and cin == cout else None
            self.conv_kxk = nn.ConvBN(cin, cout, 3, stride, groups)
            self.conv_1x1 = nn.ConvBN(cin, cout, 1, stride, groups)
        self.act = nn.ReLU()

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        if self.deploy:
            return self.act(op, self.reparam_conv(op, x))
        out = nn.add(op, self.conv_kxk(op, x), self.conv_1x1(op, x))
        if self.identity is not None:
            out = nn.add(op, out, self.identity(op, x), suffix="add_identity")
        return self.act(op, out)


class RepVGG(nn.Module):
    def __init__(self, variant: Variant, num_classes: int, deploy: bool = False) -> None:
        super().__init__()
        widths = [int(c * variant.a) for c in BASE_WIDTHS[:3]] + [int(BASE_WIDTHS[3] * variant.b)]
        cin = min(64, widths[0])
        self.stem = RepVggBlock(3, cin, 2, 1, deploy)
        stages, index = [], 0
        for depth, width in zip(variant.depths, widths):
            blocks = []
            for i in range(depth):
                groups = variant.groups if index % 2 == 1 else 1
                blocks.append(RepVggBlock(cin, width, 2 if i == 0 else 1, groups, deploy))
                cin, index = width, index + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.ClassifierHead(cin, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return self.head(op, self.stages(op, self.stem(op, x)))


def _repvgg(name: str) -> Architecture:
    variant, title = VARIANTS[name], name[0].upper() + name[1:]  # the paper's spelling: B1g4
    in_timm = variant.groups != 2  # timm and mmpretrain have no B1g2; the official repository does
    reference = f"timm.repvgg_{name}" if in_timm else f"official RepVGG create_RepVGG_{title} (not in timm)"
    deploy = f"deploy {variant.deploy_params / 1e6:.2f}M params" + (
        f", {variant.deploy_gmacs} GMACs" if variant.deploy_gmacs else ""
    )
    return Architecture(
        name=f"repvgg_{name}",
        family="repvgg",
        make=lambda n, deploy: Network(RepVGG(variant, n, deploy)),
        resolution=224,
        preprocess=imagenet_eval(224),
        head="head.fc",
        reference=reference,
        paper="Ding et al. 2021, RepVGG: Making VGG-style ConvNets Great Again",
        reference_params=variant.train_params,
        reference_gmacs=variant.train_gmacs,
        description=f"RepVGG-{title} training form (3x3, 1x1, identity branches); --deploy: one 3x3 conv ({deploy})",
        options=(DEPLOY,),
    )


ARCHITECTURES = [_repvgg(name) for name in VARIANTS]
