"""fold_repvgg: k×k + 1×1 + identity branches become one k×k convolution per block, with equal outputs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from graphgen.build import BuildOptions, build
from graphgen.passes import fold_repvgg
from tests.support.passes import assert_equivalent, check_contract, export, op_counts, randomize_batchnorm

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

RESOLUTION = 64  # small inputs keep the tests fast; the rewrite does not depend on them


def _conv_layout(model: ir.Model) -> list[tuple[int, tuple[int, ...]]]:
    return [
        (n.attributes.get_int("group", 1), tuple(n.inputs[1].const_value.shape))
        for n in model.graph
        if n.op_type == "Conv"
    ]


def _timm_repvgg(name: str):
    """timm's RepVGG in training form; ``b1g4-narrow`` is timm's own RepVGG-B1g4 configuration
    (groups 4 on every other layer) at 1/8 of its width, to keep the test fast."""
    if name != "b1g4-narrow":
        return timm.create_model(name)
    from dataclasses import replace

    from timm.models.byobnet import ByobNet, model_cfgs

    config = model_cfgs["repvgg_b1g4"]
    narrow = replace(config, stem_chs=config.stem_chs // 8, blocks=tuple(replace(b, c=b.c / 8) for b in config.blocks))
    return ByobNet(narrow)


@pytest.mark.parametrize(
    ("name", "keep_bn", "blocks"),
    [("repvgg_a0", False, 22), ("repvgg_a0", True, 22), ("b1g4-narrow", False, 28)],
    ids=["a0", "a0-with-bn", "b1g4-groups"],
)
def test_timm_repvgg_exported_by_torch(tmp_path, name: str, keep_bn: bool, blocks: int) -> None:
    """timm's training-form RepVGG, exported in eval mode (TorchScript exporter, dynamo=False).

    The exporter has already folded each conv's BatchNorm unless ``keep_bn``; the identity
    branch stays a BatchNormalization. The fold must equal the model timm re-parameterizes.
    """
    module = _timm_repvgg(name).eval()
    randomize_batchnorm(module)
    model = export(module, (1, 3, RESOLUTION, RESOLUTION), tmp_path / "train.onnx", keep_bn=keep_bn)
    folded = check_contract(fold_repvgg, model, expect=blocks)
    counts = op_counts(folded)
    assert counts["Conv"] == blocks and "BatchNormalization" not in counts and "Add" not in counts
    assert assert_equivalent(model, folded) <= 1e-5
    if keep_bn:
        return  # the same network as the case above, only exported differently
    deployed = timm.utils.reparameterize_model(module)
    native = export(deployed, (1, 3, RESOLUTION, RESOLUTION), tmp_path / "deploy.onnx")
    assert _conv_layout(folded) == _conv_layout(native)
    assert op_counts(folded) == op_counts(native)
    assert_equivalent(native, folded)
    if "g4" in name:  # the grouped layers kept their groups
        assert sorted({group for group, _ in _conv_layout(folded)}) == [1, 4]


class HandWrittenBlock(torch.nn.Module):
    """k×k + 1×1 (+ 5×5) + an identity written as x · s + b (exported as Mul and Add) or as plain x."""

    def __init__(self, identity: str, groups: int = 1, with_5x5: bool = False) -> None:
        super().__init__()
        self.conv_kxk = torch.nn.Conv2d(8, 8, 3, padding=1, groups=groups)
        self.conv_1x1 = torch.nn.Conv2d(8, 8, 1, groups=groups)
        self.conv_5x5 = torch.nn.Conv2d(8, 8, 5, padding=2, groups=groups) if with_5x5 else None
        self.scale = torch.nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.shift = torch.nn.Parameter(torch.randn(8, 1, 1))
        self.identity = identity

    def forward(self, x):
        out = self.conv_kxk(x) + self.conv_1x1(x)
        if self.conv_5x5 is not None:
            out = out + self.conv_5x5(x)
        if self.identity == "affine":
            out = out + x * self.scale + self.shift
        elif self.identity == "plain":
            out = out + x
        return torch.relu(out)


@pytest.mark.parametrize(
    ("identity", "groups", "with_5x5", "kernel"),
    [("affine", 1, False, 3), ("affine", 2, False, 3), ("plain", 4, False, 3), ("plain", 1, True, 5)],
    ids=["mul-add", "mul-add-groups2", "plain-groups4", "5x5-3x3-1x1"],
)
def test_hand_written_blocks(tmp_path, identity: str, groups: int, with_5x5: bool, kernel: int) -> None:
    torch.manual_seed(0)
    module = HandWrittenBlock(identity, groups, with_5x5)
    model = export(module, (1, 8, 12, 12), tmp_path / "block.onnx")
    assert op_counts(model).get("Mul", 0) == (identity == "affine")
    folded = check_contract(fold_repvgg, model, expect=1)
    assert op_counts(folded) == {"Conv": 1, "Relu": 1}
    (conv,) = [n for n in folded.graph if n.op_type == "Conv"]
    assert conv.attributes.get_int("group") == groups and conv.attributes.get_ints("kernel_shape") == (kernel, kernel)
    assert conv.name.endswith("reparam_conv")
    assert_equivalent(model, folded)


def test_dynamo_exported_block(tmp_path) -> None:
    torch.manual_seed(0)
    model = export(HandWrittenBlock("affine", 2), (1, 8, 12, 12), tmp_path / "block.onnx", dynamo=True)
    folded = check_contract(fold_repvgg, model, expect=1)
    assert op_counts(folded) == {"Conv": 1, "Relu": 1}
    assert_equivalent(model, folded)


def test_leaves_resnet_residuals_alone() -> None:
    """A residual add whose terms read different tensors is no RepVGG block."""
    model = build("resnet18", BuildOptions(resolution=32))
    check_contract(fold_repvgg, model, expect=0)


def _repvgg_train_and_deploy(name: str) -> tuple[ir.Model, ir.Model]:
    options = BuildOptions(keep_bn=True, batch=1, resolution=RESOLUTION)
    training = build(name, options)
    rng = np.random.default_rng(0)
    for node in training.graph:
        if node.op_type == "BatchNormalization":  # random statistics: folding must get them right
            for value, low in zip(node.inputs[1:5], (0.5, -0.3, -0.3, 0.5)):
                shape = value.const_value.shape
                value.const_value = ir.Tensor(
                    rng.uniform(low, low + 0.6 if low < 0 else low + 1, shape).astype(np.float32)
                )
    deploy = build(name, BuildOptions(batch=1, resolution=RESOLUTION, variant={"deploy": True}))
    return training, deploy


@pytest.mark.parametrize("name", ["repvgg_a0", "repvgg_b1g4"])
def test_graphgen_training_form_equals_native_deploy(name: str) -> None:
    """graphgen's RepVGG training form (--keep-bn) folded = the natively built --deploy graph.

    Same structure (ops, conv groups and kernel shapes, initializer names), and the folded
    weights loaded into the native deploy build give the same outputs.
    """
    training, deploy = _repvgg_train_and_deploy(name)
    blocks = sum(1 for n in deploy.graph if n.op_type == "Conv")
    folded = check_contract(fold_repvgg, training, expect=blocks)
    assert assert_equivalent(training, folded, batch=1) <= 1e-5
    assert op_counts(folded) == op_counts(deploy)
    assert _conv_layout(folded) == _conv_layout(deploy)
    assert set(folded.graph.initializers) == set(deploy.graph.initializers)
    state = {key: value.const_value.numpy() for key, value in folded.graph.initializers.items()}
    reloaded = build(name, BuildOptions(batch=1, resolution=RESOLUTION, variant={"deploy": True}), state=state)
    assert_equivalent(folded, reloaded, batch=1)


def test_parnet_folds_around_its_gated_identity() -> None:
    """ParNet's stride-1 blocks: 3×3 + 1×1 fold into one conv, the SE-gated identity term stays added.

    Its 7 stride-2 blocks (AvgPool → 1×1 branch) are left as they are: the pass does not fold pooling.
    """
    model = build("parnet_s", BuildOptions(keep_bn=True, batch=1, resolution=RESOLUTION))
    folded = check_contract(fold_repvgg, model, expect=15)
    assert op_counts(model)["Conv"] - op_counts(folded)["Conv"] == 15
    gated = [n for n in folded.graph if n.name.endswith("reparam_conv.add")]
    identities = [n for n in model.graph if n.name.endswith("rbr_identity")]  # blocks with in = out channels
    assert len(gated) == len(identities) == 14 and all(n.inputs[1].producer().op_type == "Mul" for n in gated)
    assert_equivalent(model, folded, batch=1)
