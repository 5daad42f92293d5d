"""ParNet against a small torch re-implementation of the official configuration.

No torch package ships ParNet, so this file writes one from the official repository's
description (imankgoyal/NonDeepNetworks, simplenet_impl: RepVGG-SSE blocks, stride-2 1×1 branch
after a 2×2 average pool, fusion = BN per input + interleaved concat + groups=2 block + channel
shuffle), with the official state_dict keys. Its random weights load into graphgen by key; the
fused (``--deploy``) form is checked against the same training-form logits after folding the
branches the official way (BN into conv, 1×1 padded into the 3×3's centre, the pooled 1×1 as a
2×2 kernel of quarters in the 3×3's bottom-right corner).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from graphgen.build import BuildOptions, build, save
from graphgen.models.parnet import SIZES, STREAM_BLOCKS
from tests.builder.test_reference_parity import randomise_batchnorm
from tests.conftest import TORCH_THREADS, unit_std_error

torch = pytest.importorskip("torch")
tnn = torch.nn


def conv_bn(cin, cout, kernel, stride, groups):
    conv = tnn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return tnn.Sequential(OrderedDict(conv=conv, bn=tnn.BatchNorm2d(cout)))


def shuffle(x, groups):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class Gate(tnn.Module):
    def __init__(self, cin, cout, groups, doubled):
        super().__init__()
        self.cvsig = tnn.Module()
        self.cvsig.conv = tnn.Conv2d(cin, cout, 1, groups=groups, bias=False)
        self.doubled = doubled

    def forward(self, x):
        gate = torch.sigmoid(self.cvsig.conv(x.mean((2, 3), keepdim=True)))
        return 2 * gate if self.doubled else gate


class Inner(tnn.Module):
    def __init__(self, cin, cout, stride, groups, act):
        super().__init__()
        self.rbr_identity = tnn.BatchNorm2d(cin) if stride == 1 and cin == cout else None
        self.rbr_dense = conv_bn(cin, cout, 3, stride, groups)
        self.rbr_1x1 = conv_bn(cin, cout, 1, 1, groups)
        if stride == 2:
            self.rbr_1x1 = tnn.Sequential(tnn.AvgPool2d(2), self.rbr_1x1)
        self.se = Gate(cin, cout, groups, doubled=self.rbr_identity is None)
        self.groups, self.act = groups, act

    def forward(self, x):
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is None:
            out = out * self.se(x)
        else:
            identity = self.rbr_identity(x)
            out = out + identity * self.se(identity)
        out = self.act(out)
        return shuffle(out, self.groups) if self.groups > 1 else out


class Block(tnn.Module):
    def __init__(self, cin, cout, stride, act, groups=1):
        super().__init__()
        self.block = Inner(cin, cout, stride, groups, act)

    def forward(self, x):
        return self.block(x)


class Fuse(tnn.Module):
    def __init__(self, channels, cout, stride, act):
        super().__init__()
        self.norms = tnn.Module()
        self.norms.b1, self.norms.b2 = tnn.BatchNorm2d(channels), tnn.BatchNorm2d(channels)
        self.block = Block(2 * channels, cout, stride, act, groups=2)

    def forward(self, a, b):
        pair = torch.stack([self.norms.b1(a), self.norms.b2(b)], 2)  # interleave: a0, b0, a1, b1, ...
        return self.block(pair.flatten(1, 2))


class TorchParNet(tnn.Module):
    def __init__(self, planes, last, act):
        super().__init__()
        p0, p1, p2 = planes
        self.inits = tnn.ModuleList(
            [
                tnn.Sequential(Block(3, min(64, p0), 2, act), Block(min(64, p0), p0, 2, act)),
                Block(p0, p1, 2, act),
                Block(p1, p2, 2, act),
            ]
        )
        self.streams = tnn.ModuleList(
            tnn.Sequential(*(Block(p, p, 1, act) for _ in range(n))) for p, n in zip(planes, STREAM_BLOCKS)
        )
        self.down, self.fuse1, self.fuse2 = Block(p0, p1, 2, act), Fuse(p1, p2, 2, act), Fuse(p2, p2, 1, act)
        self.last = Block(p2, last, 2, act)
        self.fc = tnn.Linear(last, 1000)

    def forward(self, x):
        x0 = self.inits[0](x)
        x1 = self.inits[1](x0)
        x2 = self.inits[2](x1)
        y = self.down(self.streams[0](x0))
        y = self.fuse1(self.streams[1](x1), y)
        y = self.last(self.fuse2(self.streams[2](x2), y))
        return self.fc(y.mean((2, 3)))

    def official_state_dict(self):
        renames = {
            "down.": "downsamples_2.0.",
            "fuse1.norms.": "downsamples_2.1.0.",
            "fuse1.block.": "downsamples_2.1.2.",
        }
        renames |= {
            "fuse2.norms.": "combine.0.",
            "fuse2.block.": "combine.2.",
            "last.": "combine.3.",
            "fc.": "head.fc.",
        }
        state = {}
        for key, value in self.state_dict().items():
            for old, new in renames.items():
                if key.startswith(old):
                    key = new + key[len(old) :]
            state[key] = value.detach().numpy()
        return state


def fold(conv, bn_prefix, state):
    t = state[f"{bn_prefix}.weight"] / np.sqrt(state[f"{bn_prefix}.running_var"] + 1e-5)
    return conv * t[:, None, None, None], state[f"{bn_prefix}.bias"] - state[f"{bn_prefix}.running_mean"] * t


def fused_state(state):
    """The official fuse_repvgg_block on a state_dict: one 3×3 conv with bias per block."""
    fused = {}
    for key in [k for k in state if k.endswith("rbr_dense.conv.weight")]:
        block = key.removesuffix("rbr_dense.conv.weight")
        kernel, bias = fold(state[key], f"{block}rbr_dense.bn", state)
        if f"{block}rbr_1x1.conv.weight" in state:
            k1, b1 = fold(state[f"{block}rbr_1x1.conv.weight"], f"{block}rbr_1x1.bn", state)
            kernel[:, :, 1:2, 1:2] += k1
        else:  # 2×2 average then 1×1 = a 2×2 kernel of quarters on the 3×3 window's bottom-right
            k1, b1 = fold(state[f"{block}rbr_1x1.1.conv.weight"], f"{block}rbr_1x1.1.bn", state)
            kernel[:, :, 1:, 1:] += k1 / 4
        fused[f"{block}rbr_dense.weight"], fused[f"{block}rbr_dense.bias"] = kernel, bias + b1
    return fused | {k: v for k, v in state.items() if "rbr_dense" not in k and "rbr_1x1" not in k}


@pytest.mark.parametrize(("name", "activation"), [("parnet_s", "relu"), ("parnet_s", "silu")])
def test_parnet_equals_torch_reimplementation_in_both_forms(name, activation, tmp_path, ort_cpu):
    torch.manual_seed(0)
    torch.set_num_threads(TORCH_THREADS)
    size = SIZES[name.removeprefix("parnet_")]
    act = tnn.ReLU() if activation == "relu" else tnn.SiLU()
    reference = randomise_batchnorm(TorchParNet(size.planes, size.last, act).eval())
    assert sum(p.numel() for p in reference.parameters()) == size.train_params
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    state = reference.official_state_dict()
    for deploy, weights in ((False, state), (True, fused_state(state))):
        options = BuildOptions(variant={"activation": activation, "deploy": deploy})
        path = save(build(name, options, state=weights), tmp_path / f"{name}_{deploy}.onnx")
        (actual,) = ort_cpu(path).run(None, {"input": x})
        assert unit_std_error(actual, expected) <= 1e-4, f"deploy={deploy}"


@pytest.mark.parametrize("name", list(SIZES))
def test_parnet_fused_counts_and_macs(name):
    from graphgen.stats import layer_stats

    size = SIZES[name]
    stats = layer_stats(build(f"parnet_{name}", BuildOptions(variant={"deploy": True})))
    assert stats.params == size.fused_params
    assert stats.macs / 1e9 == pytest.approx(size.fused_gmacs, rel=0.01)


def test_parnet_refuses_resolutions_not_divisible_by_32():
    with pytest.raises(ValueError, match="divisible by 32"):
        build("parnet_s", BuildOptions(resolution=240))
    with pytest.raises(ValueError, match="--activation must be one of relu, silu"):
        build("parnet_s", BuildOptions(variant={"activation": "gelu"}))
