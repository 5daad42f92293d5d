"""ParNet (Goyal et al. 2021, "Non-deep Networks"): depth 12, three parallel streams.

Built from the official repository's configuration (imankgoyal/NonDeepNetworks,
``simplenet_impl/simpnet.py`` and ``repvgg.py``); module names follow its state_dict keys
(``streams.1.2.block.rbr_dense.conv``), so its checkpoints load by key.

* **Block** (RepVGG-SSE): 3×3 conv + BN, 1×1 conv + BN and — when the block keeps its shape —
  a BN on the input gated by Skip-Squeeze-Excitation (global pool, one grouped 1×1 conv without
  bias, sigmoid). A block that changes shape gates the branch sum instead, by 2·sigmoid. At
  stride 2 the 1×1 branch average-pools 2×2 first. Every block has SE, inits and fusions too.
* **Layout**: inits (two stride-2 blocks to 56², then one per further stream) feed three streams
  of 4, 5 and 5 blocks at 56², 28², 14²; the first stream is downsampled by a block, later ones
  are *fused*: BN each input, interleave their channels (concat + shuffle), then a groups=2 block
  whose output is channel-shuffled again. A stride-2 block to the last width, global pool, fc.
* **Activation**: the paper says SiLU, but the released YAMLs list ``[['swish']]`` and the code
  tests ``'swish' in additional_branches`` — false for a nested list — so the trained models ran
  **ReLU**. ReLU is the default here; ``--activation silu`` builds the paper's variant.
* ``--deploy`` builds the fused form natively (the official ``fuse_repvgg_block``): one 3×3 conv
  with bias per block, named ``rbr_dense``; the identity BN, the SE gates and the fusion BNs stay.

Widths: S (96, 192, 384 → 1280) as the paper's table (the repository's S config uses 92),
M (128, 256, 512 → 2048), L (160, 320, 640 → 2560), XL (200, 400, 800 → 3200). Every stride-2
block needs an even input, so the resolution must be a multiple of 32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import Architecture, Network, Option, imagenet_eval
from graphgen.errors import UserError
from graphgen.onnxscript_api import OpBuilder


class Size(NamedTuple):
    planes: tuple[int, int, int]  # the three streams' widths
    last: int  # width before the classifier
    train_params: int
    fused_params: int
    fused_gmacs: float  # at 224


# fmt: off
STREAM_BLOCKS = (4, 5, 5)  # the repository's num_blocks (5, 6, 6, 1), each stream one block short
#                 stream widths     last  train params  fused params  fused GMACs
SIZES = {
    "s":  Size((96, 192, 384),  1280, 20_983_848, 19_177_032,  4.84),
    "m":  Size((128, 256, 512), 2048, 38_953_256, 35_576_616,  8.58),
    "l":  Size((160, 320, 640), 2560, 60_180_008, 54_914_824, 13.32),
    "xl": Size((200, 400, 800), 3200, 93_176_168, 84_962_784, 20.72),
}
# fmt: on
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}
ACTIVATION = Option("activation", str, "ParNet: the activation (silu: the paper's)", tuple(ACTIVATIONS), "relu")
DEPLOY = Option("deploy", bool, "RepVGG, ParNet: the fused single-branch form, built natively")


def channel_shuffle(op: OpBuilder, x: ir.Value, groups: int, suffix: str = "shuffle") -> ir.Value:
    """[b, g·c, h, w] → view [b, g, c, h, w] → swap g and c → [b, c·g, h, w] (interleaves the groups)."""
    channels, (height, width) = nn.static_channels(x), nn.static_spatial(x)
    # The shapes become int64 initializers (not parameters: statistics count float tensors only), not
    # Constant nodes, which onnxsim and onnxslim would turn into initializers. 0 keeps the (dynamic) batch size.
    split = [0, groups, channels // groups, height, width]
    merged = [0, channels, height, width]
    x = nn.emit(op, "Reshape", x, split, suffix=f"{suffix}.split")
    x = nn.emit(op, "Transpose", x, suffix=f"{suffix}.transpose", perm=[0, 2, 1, 3, 4])
    return nn.emit(op, "Reshape", x, merged, suffix=suffix)


class ConvSig(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, groups=groups, bias=False)
        self.act = nn.Sigmoid()

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return self.act(op, self.conv(op, x))


class SkipSqueezeExcitation(nn.Module):
    """The official SE1: one grouped 1×1 conv; doubled when it gates a block that changes shape."""

    def __init__(self, cin: int, cout: int, groups: int, doubled: bool) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.cvsig = ConvSig(cin, cout, groups)
        self.doubled = doubled

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        gate = self.cvsig(op, self.avg_pool(op, x))
        return nn.emit(op, "Mul", gate, 2.0, suffix="double") if self.doubled else gate


class RepVGGBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int, activation: str, deploy: bool) -> None:
        super().__init__()
        self.deploy, self.groups = deploy, groups
        self.rbr_identity = nn.BatchNorm2d(cin) if stride == 1 and cin == cout else None
        self.rbr_dense: nn.Module
        if deploy:
            self.rbr_dense = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=True)
        else:
            self.rbr_dense = nn.ConvBN(cin, cout, 3, stride, groups)
            one_by_one = nn.ConvBN(cin, cout, 1, 1, groups)
            # At stride 2 the 1×1 branch sees 2×2 averages (it fuses as a 2×2 kernel in the 3×3's corner).
            self.rbr_1x1 = nn.Sequential(nn.AvgPool2d(2, 2), one_by_one) if stride == 2 else one_by_one
        self.se = SkipSqueezeExcitation(cin, cout, groups, doubled=self.rbr_identity is None)
        self.nonlinearity = ACTIVATIONS[activation]()

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        out = self.rbr_dense(op, x)
        if not self.deploy:
            out = nn.add(op, out, self.rbr_1x1(op, x))
        if self.rbr_identity is not None:
            identity = self.rbr_identity(op, x)
            gated = nn.emit(op, "Mul", identity, self.se(op, identity), suffix="gate")
            out = nn.add(op, out, gated, suffix="add_identity")
        else:
            out = nn.emit(op, "Mul", out, self.se(op, x), suffix="gate")
        out = self.nonlinearity(op, out)
        return channel_shuffle(op, out, self.groups) if self.groups > 1 else out


@dataclass(frozen=True)
class BlockForm:
    """What every block of one ParNet shares: its activation, and whether it is built fused."""

    activation: str
    deploy: bool


class ParNetBlock(nn.Module):
    """The official RepVGGOur wrapper: its only key is ``block``."""

    def __init__(self, cin: int, cout: int, stride: int, form: BlockForm, groups: int = 1) -> None:
        super().__init__()
        self.block = RepVGGBlock(cin, cout, stride, groups, form.activation, form.deploy)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return self.block(op, x)


class MultiBatchNorm2d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.b1, self.b2 = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)

    def forward(self, op: OpBuilder, pair: tuple[ir.Value, ir.Value]) -> tuple[ir.Value, ir.Value]:
        return self.b1(op, pair[0]), self.b2(op, pair[1])


class Concat2d(nn.Module):
    """Concatenate two streams with their channels interleaved (concat, then a 2-group shuffle)."""

    def forward(self, op: OpBuilder, pair: tuple[ir.Value, ir.Value]) -> ir.Value:
        return channel_shuffle(op, nn.concat(op, list(pair)), 2)


def fusion(channels: int, cout: int, stride: int, form: BlockForm) -> list[nn.Module]:
    """BN each input, interleave, then a groups=2 block (official keys ``.0.b1``, ``.0.b2``, ``.2.block``)."""
    return [MultiBatchNorm2d(channels), Concat2d(), ParNetBlock(2 * channels, cout, stride, form, groups=2)]


class ParNet(nn.Module):
    def __init__(self, size: Size, num_classes: int, activation: str = "relu", deploy: bool = False) -> None:
        super().__init__()
        form = BlockForm(activation, deploy)
        p0, p1, p2 = size.planes
        self.inits = nn.ModuleList(
            [
                nn.Sequential(ParNetBlock(3, min(64, p0), 2, form), ParNetBlock(min(64, p0), p0, 2, form)),
                ParNetBlock(p0, p1, 2, form),
                ParNetBlock(p1, p2, 2, form),
            ]
        )
        self.streams = nn.ModuleList(
            [nn.Sequential(*(ParNetBlock(p, p, 1, form) for _ in range(n))) for p, n in zip(size.planes, STREAM_BLOCKS)]
        )
        self.downsamples_2 = nn.ModuleList([ParNetBlock(p0, p1, 2, form), nn.Sequential(*fusion(p1, p2, 2, form))])
        self.combine = nn.Sequential(*fusion(p2, p2, 1, form), ParNetBlock(p2, size.last, 2, form))
        self.head = nn.ClassifierHead(size.last, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        height, width = nn.static_spatial(x)
        if height % 32 or width % 32:
            raise UserError(f"ParNet needs a resolution divisible by 32 (five stride-2 stages), got {height}x{width}")
        x0 = self.inits[0](op, x)
        x1 = self.inits[1](op, x0)
        x2 = self.inits[2](op, x1)
        y = self.downsamples_2[0](op, self.streams[0](op, x0))
        y = self.downsamples_2[1](op, (self.streams[1](op, x1), y))
        y = self.combine(op, (self.streams[2](op, x2), y))
        return self.head(op, y)


def _parnet(name: str) -> Architecture:
    size = SIZES[name]
    return Architecture(
        name=f"parnet_{name}",
        family="parnet",
        make=lambda n, activation, deploy: Network(ParNet(size, n, activation, deploy)),
        resolution=224,
        preprocess=imagenet_eval(224),
        head="head.fc",
        reference="official NonDeepNetworks simplenet_repvgg (imagenet/timm/models/simplenet_impl); no torch package",
        paper="Goyal, Bochkovskiy, Deng, Koltun 2021, Non-deep Networks (arXiv 2110.07641)",
        reference_params=size.train_params,
        description=(
            f"ParNet-{name.upper()}: 3 streams of RepVGG-SSE blocks, depth 12, ReLU as released (--activation silu: "
            f"paper); --deploy fused ({size.fused_params / 1e6:.2f}M, {size.fused_gmacs} GMACs)"
        ),
        options=(ACTIVATION, DEPLOY),
    )


ARCHITECTURES = [_parnet(name) for name in SIZES]
