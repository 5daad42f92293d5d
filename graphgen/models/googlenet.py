"""GoogLeNet / Inception v1 (Szegedy et al. 2014), torchvision's version.

The paper's Table 1 as data: nine Inception modules of four parallel branches (1×1; 1×1 → 3×3;
1×1 → "5×5"; 3×3 max-pool → 1×1), concatenated. torchvision's differences from the paper, kept
here because its weights need them: BatchNorm (eps 1e-3) after every conv, the "5×5" branch is
a 3×3 (pytorch/vision#906), and max-pools round up (ceil mode).

``transform_input``: torchvision's pretrained GoogLeNet re-normalises its ImageNet-normalised
input to (x − 0.5) / 0.5, the normalisation of the original Google weights. graphgen puts that
in the preprocessing metadata instead (mean = std = 0.5, which yields the very same tensor), so
the graph is torchvision's with ``transform_input=False``.

The auxiliary classifiers are training-only; ``--aux`` adds them as the extra outputs
``aux_logits2`` and ``aux_logits1`` (torchvision's order), computed as in eval mode.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from graphgen import nn
from graphgen.architecture import OUTPUT_NAME, Architecture, Network, Option
from graphgen.checkpoint import StateDict
from graphgen.errors import UserError
from graphgen.metadata import Preprocess
from graphgen.onnxscript_api import OpBuilder

INCEPTION_EPS = 1e-3
HALF = (0.5, 0.5, 0.5)

# fmt: off
# Table 1: in, #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5 (a 3×3 here), pool proj; "M" = 3×3/2 max-pool
STAGES: list[tuple[str, tuple[int, ...] | int]] = [
    ("inception3a", (192,  64,  96, 128, 16,  32,  32)),
    ("inception3b", (256, 128, 128, 192, 32,  96,  64)),
    ("maxpool3",    3),
    ("inception4a", (480, 192,  96, 208, 16,  48,  64)),
    ("inception4b", (512, 160, 112, 224, 24,  64,  64)),
    ("inception4c", (512, 128, 128, 256, 24,  64,  64)),
    ("inception4d", (512, 112, 144, 288, 32,  64,  64)),
    ("inception4e", (528, 256, 160, 320, 32, 128, 128)),
    ("maxpool4",    2),
    ("inception5a", (832, 256, 160, 320, 32, 128, 128)),
    ("inception5b", (832, 384, 192, 384, 48, 128, 128)),
]
AUX_TAPS = {"inception4a": "aux1", "inception4d": "aux2"}  # aux heads read these modules' outputs
# fmt: on


class BasicConv2d(nn.Module):
    """Conv (no bias) → BatchNorm → ReLU, torchvision's ``BasicConv2d`` and timm's ``ConvNormAct``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: nn.IntPair,
        stride: int = 1,
        padding: nn.IntPair = 0,
        eps: float = INCEPTION_EPS,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps)
        self.relu = nn.ReLU()

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return self.relu(op, self.bn(op, self.conv(op, x)))


class Inception(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, c3r, 1), BasicConv2d(c3r, c3, 3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, c5r, 1), BasicConv2d(c5r, c5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pool_proj, 1))

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return nn.concat(op, [branch(op, x) for branch in (self.branch1, self.branch2, self.branch3, self.branch4)])


class AdaptiveAvgPool2dEqualWindows(nn.Module):
    """torch's adaptive average pool where every window has the same size but the starts are uneven.

    14×14 → 4×4 (GoogLeNet's aux heads at 224) has 4-wide windows starting at 0, 3, 7, 10: a
    stride-1 4×4 average pool, then a Gather of those rows and columns — exact, unlike any
    single pool.
    """

    def __init__(self, output_size: int) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        size = nn.static_spatial(x)
        if size[0] != size[1]:
            raise UserError(f"{nn.scope_name(op)}: square feature map expected, got {size}")
        n, out = size[0], self.output_size
        starts = [i * n // out for i in range(out)]
        widths = {math.ceil((i + 1) * n / out) - start for i, start in enumerate(starts)}
        if len(widths) != 1:
            raise UserError(
                f"{nn.scope_name(op)}: adaptive pooling {n}x{n} -> {out}x{out} has windows of sizes "
                f"{sorted(widths)}; choose a resolution whose aux feature map pools evenly (e.g. 224)"
            )
        (width,) = widths
        pooled = nn.emit(op, "AveragePool", x, kernel_shape=[width, width], strides=[1, 1])
        # A Constant node, not an initializer: index lists are not parameters.
        index = nn.emit(op, "Constant", suffix="starts", value=ir.tensor(np.array(starts, np.int64)))
        rows = nn.emit(op, "Gather", pooled, index, suffix="rows", axis=2)
        return nn.emit(op, "Gather", rows, index, suffix="cols", axis=3)


class InceptionAux(nn.Module):
    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.pool = AdaptiveAvgPool2dEqualWindows(4)
        self.conv = BasicConv2d(cin, 128, 1)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(2048, 1024)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        x = self.flatten(op, self.conv(op, self.pool(op, x)))
        return self.fc2(op, self.relu(op, self.fc1(op, x)))


def drop_aux_keys(state: StateDict, prefixes: tuple[str, ...]) -> StateDict:
    """Pretrained torchvision checkpoints carry the train-only aux heads; the inference graph has none."""
    return {key: value for key, value in state.items() if not key.startswith(prefixes)}


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int, aux: bool = False) -> None:
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, 7, 2, 3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for name, spec in STAGES:
            module = Inception(*spec) if isinstance(spec, tuple) else nn.MaxPool2d(spec, 2, ceil_mode=True)
            setattr(self, name, module)
        self.aux = aux
        if aux:
            self.aux1 = InceptionAux(512, num_classes)
            self.aux2 = InceptionAux(528, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value | tuple[ir.Value, ir.Value, ir.Value]:
        x = self.maxpool1(op, self.conv1(op, x))
        x = self.maxpool2(op, self.conv3(op, self.conv2(op, x)))
        aux = {}
        for name, _ in STAGES:
            x = getattr(self, name)(op, x)
            if self.aux and name in AUX_TAPS:
                aux[AUX_TAPS[name]] = getattr(self, AUX_TAPS[name])(op, x)
        logits = self.fc(op, self.flatten(op, self.avgpool(op, x)))
        return (logits, aux["aux2"], aux["aux1"]) if self.aux else logits


AUX = Option("aux", bool, "Inception/GoogLeNet: add the auxiliary heads as extra outputs")


def with_aux(module: nn.Module, aux: bool, outputs: tuple[str, ...], keys: tuple[str, ...]) -> Network:
    """The network with its auxiliary heads as extra ``outputs``, or without them (checkpoints' ``keys`` dropped)."""
    if aux:
        return Network(module, output_names=(OUTPUT_NAME, *outputs))
    return Network(module, adapt_state_dict=lambda state: drop_aux_keys(state, keys))


def _googlenet(num_classes: int, aux: bool) -> Network:  # torchvision's order: logits, aux2's, aux1's
    return with_aux(GoogLeNet(num_classes, aux), aux, ("aux_logits2", "aux_logits1"), ("aux1.", "aux2."))


ARCHITECTURES = [
    Architecture(
        name="googlenet",
        family="inception",
        make=_googlenet,
        resolution=224,
        preprocess=Preprocess(256, 224, HALF, HALF),
        head="fc",
        aux_heads=("aux1.fc2", "aux2.fc2"),
        reference="torchvision.models.googlenet",
        paper="Szegedy et al. 2014, Going Deeper with Convolutions",
        reference_params=6_624_904,
        reference_gmacs=1.498,
        description="GoogLeNet / Inception v1 (torchvision: BN eps 1e-3, 3x3 '5x5' branch, ceil-mode pools)",
        options=(AUX,),
        reference_kwargs={"aux_logits": False, "init_weights": False, "transform_input": False},
    )
]
