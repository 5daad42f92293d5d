"""group_branches: ResNeXt forms (a) and (b) become form (c), one grouped convolution, with equal outputs."""

from __future__ import annotations

import functools
import operator
from dataclasses import replace

import numpy as np
import onnx_ir as ir
import pytest

from graphgen import nn
from graphgen.architecture import Network
from graphgen.build import IR_VERSION, BuildOptions, build, fill_weights, trace
from graphgen.metadata import GROUPED_FROM
from graphgen.passes import fold_batchnorm, group_branches
from tests.support.passes import assert_equivalent, check_contract, export, op_counts, randomize_batchnorm

torch = pytest.importorskip("torch")

CHANNELS, WIDTH, GROUPS = 32, 4, 8  # a ResNeXt block of 8 paths of width 4


class TorchPath(torch.nn.Module):
    """One path: 1×1 (C→d) + BN + ReLU → 3×3 (d→d, ``inner_groups``) + BN + ReLU [→ 1×1 (d→C)]."""

    def __init__(self, project: bool, inner_groups: int = 1) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(CHANNELS, WIDTH, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(WIDTH)
        self.conv2 = torch.nn.Conv2d(WIDTH, WIDTH, 3, padding=1, groups=inner_groups, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(WIDTH)
        self.conv3 = torch.nn.Conv2d(WIDTH, CHANNELS, 1, bias=False) if project else None
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        return self.conv3(x) if self.conv3 is not None else x


class TorchFormA(torch.nn.Module):
    """Form (a): the paths' 1×1 projections summed, BN after the aggregation, then the shortcut.

    ``shortcut``: "in-sum" — no BN after the sum, so the shortcut joins the same chain of Adds;
    "projection" — the same with a 1×1 conv + BN shortcut, a chain from x that is no path.
    """

    def __init__(self, inner_groups: int = 1, shortcut: str = "") -> None:
        super().__init__()
        self.branches = torch.nn.ModuleList(TorchPath(True, inner_groups) for _ in range(GROUPS))
        self.bn3 = None if shortcut else torch.nn.BatchNorm2d(CHANNELS)
        projection = torch.nn.Sequential(
            torch.nn.Conv2d(CHANNELS, CHANNELS, 1, bias=False), torch.nn.BatchNorm2d(CHANNELS)
        )
        self.shortcut = projection if shortcut == "projection" else torch.nn.Identity()

    def forward(self, x):
        total = functools.reduce(operator.add, [path(x) for path in self.branches])
        return torch.relu((self.bn3(total) if self.bn3 is not None else total) + self.shortcut(x))


class TorchFormB(torch.nn.Module):
    """Form (b): the paths concatenated, then one 1×1 (G·d→C) + BN, then the shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.branches = torch.nn.ModuleList(TorchPath(False) for _ in range(GROUPS))
        self.conv3 = torch.nn.Conv2d(GROUPS * WIDTH, CHANNELS, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(CHANNELS)

    def forward(self, x):
        return torch.relu(self.bn3(self.conv3(torch.cat([path(x) for path in self.branches], 1))) + x)


def _torch_block(form: str, tmp_path, *, keep_bn: bool = False, dynamo: bool = False, inner_groups: int = 1):
    torch.manual_seed(0)
    shortcut = {"a": "", "a+x": "in-sum", "a+projection": "projection"}
    module = TorchFormA(inner_groups, shortcut[form]) if form.startswith("a") else TorchFormB()
    randomize_batchnorm(module)
    return export(module, (1, CHANNELS, 8, 8), tmp_path / "block.onnx", keep_bn=keep_bn, dynamo=dynamo)


def _assert_grouped(model: ir.Model, groups: int, shortcut_convs: int = 0) -> None:
    """Three convolutions in a row, the middle one grouped; no tensor feeds parallel convs but a shortcut's."""
    convs = [node for node in model.graph if node.op_type == "Conv"]
    assert sorted(conv.attributes.get_int("group", 1) for conv in convs) == sorted(
        [1, groups, 1] + [1] * shortcut_convs
    )
    assert "Concat" not in op_counts(model) and "Sum" not in op_counts(model)
    for node in model.graph:
        readers = [user for out in node.outputs for user, _ in out.uses() if user.op_type == "Conv"]
        assert len(readers) <= 1 + shortcut_convs, f"{node.name} still feeds parallel convolutions"
    grouped = next(conv for conv in convs if conv.attributes.get_int("group", 1) == groups)
    assert grouped.metadata_props[GROUPED_FROM] == str(GROUPS)


@pytest.mark.parametrize(
    ("form", "keep_bn"),
    [("a", False), ("a", True), ("a+x", False), ("a+projection", True), ("b", False), ("b", True)],
    ids=["a-folded", "a-with-bn", "a-shortcut-in-sum", "a-projection-in-sum", "b-folded", "b-with-bn"],
)
def test_torchscript_exported_block(tmp_path, form: str, keep_bn: bool) -> None:
    model = _torch_block(form, tmp_path, keep_bn=keep_bn)
    grouped = check_contract(group_branches, model, expect=1)
    _assert_grouped(grouped, GROUPS, shortcut_convs=int(form == "a+projection"))
    assert assert_equivalent(model, grouped) <= 1e-5
    if keep_bn:  # the stacked BatchNorms are still there, one per stacked step
        assert op_counts(grouped)["BatchNormalization"] == 3
    # form a's BatchNorm after the sum now follows a Conv: folded in an inference-form input, else left and said
    notes = group_branches(model).notes
    if keep_bn:
        assert len(notes) == 1 and notes[0].endswith("--fold-bn folds them (3 in all)")
    else:
        assert notes == (
            ("1 BatchNormalization(s) and constant scale(s) folded into convolutions",) if form == "a" else ()
        )


def test_dynamo_exported_block(tmp_path) -> None:
    model = _torch_block("a", tmp_path, dynamo=True)
    grouped = check_contract(group_branches, model, expect=1)
    _assert_grouped(grouped, GROUPS)
    assert_equivalent(model, grouped)


def test_grouped_paths_give_groups_times_groups(tmp_path) -> None:
    """Paths whose 3×3 is itself grouped (g=2) stack into group G·g."""
    model = _torch_block("a", tmp_path, inner_groups=2)
    grouped = check_contract(group_branches, model, expect=1)
    _assert_grouped(grouped, GROUPS * 2)
    assert_equivalent(model, grouped)


class GraphgenPath(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(16, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width)
        self.relu = nn.ReLU6()  # Clip with constant bounds: one activation serves every path

    def forward(self, op, x):
        return self.relu(op, self.bn2(op, self.conv2(op, self.relu(op, self.bn1(op, self.conv1(op, x))))))


class GraphgenNet(nn.Module):
    """A stem, then 4 strided paths concatenated (form b) and projected; built by graphgen.nn."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.branches = nn.ModuleList([GraphgenPath(6) for _ in range(4)])
        self.project = nn.Conv2d(24, 8, 1)

    def forward(self, op, x):
        x = self.stem(op, x)
        return self.project(op, nn.concat(op, [path(op, x) for path in self.branches]))


def _graphgen_net() -> ir.Model:
    graph = trace(Network(GraphgenNet()), "paths", resolution=32, batch=None)
    fill_weights(graph, None, seed=0, reinitialise=None)
    rng = np.random.default_rng(1)
    for name, value in graph.initializers.items():  # BatchNorm away from the identity
        if ".bn" in name:
            base = rng.uniform(0.5, 1.5, value.const_value.shape).astype(np.float32)
            value.const_value = ir.Tensor(base if "var" in name or "weight" in name else base - 1, name=name)
    return ir.Model(graph, ir_version=IR_VERSION)


@pytest.mark.parametrize("fold_first", [False, True], ids=["with-bn", "bn-folded"])
def test_graphgen_built_paths(fold_first: bool) -> None:
    model = _graphgen_net()
    if fold_first:
        model = fold_batchnorm(model).model
    grouped = check_contract(group_branches, model, expect=1)
    convs = [node for node in grouped.graph if node.op_type == "Conv"]
    assert [(conv.name, conv.attributes.get_int("group", 1)) for conv in convs] == [
        ("stem", 1),
        ("branches.conv1", 1),
        ("branches.conv2", 4),
        ("project", 1),
    ]
    assert grouped.graph.initializers["branches.conv2.weight"].const_value.shape == (24, 6, 3, 3)
    assert_equivalent(model, grouped)


class TorchMixedBranches(torch.nn.Module):
    """Inception-like: paths of different structure, and summed paths ending in ReLU — not foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.short = torch.nn.Conv2d(CHANNELS, WIDTH, 1)
        self.long = torch.nn.Sequential(
            torch.nn.Conv2d(CHANNELS, WIDTH, 1), torch.nn.Conv2d(WIDTH, WIDTH, 3, padding=1)
        )
        self.relu_paths = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Conv2d(CHANNELS, WIDTH, 1), torch.nn.Conv2d(WIDTH, WIDTH, 3, padding=1), torch.nn.ReLU()
            )
            for _ in range(3)
        )

    def forward(self, x):
        relu_sum = functools.reduce(operator.add, [path(x) for path in self.relu_paths])
        return torch.cat([self.short(x), self.long(x), relu_sum], 1)


def test_leaves_other_multibranch_shapes_alone(tmp_path) -> None:
    model = export(TorchMixedBranches(), (1, CHANNELS, 8, 8), tmp_path / "mixed.onnx")
    result = check_contract(group_branches, model, expect=0)
    assert op_counts(result) == op_counts(model)


def test_resnext50_branches_form_equals_grouped_build() -> None:
    """graphgen's --form branches (32 paths per block) → group_branches = the --form grouped build."""
    state = _random_batchnorm_state(build("resnext50_32x4d", BuildOptions(keep_bn=True, batch=1, resolution=64)))
    options = BuildOptions(batch=1, resolution=64)
    branches = build("resnext50_32x4d", replace(options, variant={"form": "branches"}), state=state)
    native = build("resnext50_32x4d", options, state=state)
    # Form (a) has its BatchNorm after the sum, which only now follows a Conv: the pass folds it, as
    # the build would have, since the input had no other BatchNorm left.
    grouped = check_contract(group_branches, branches, expect=16)
    assert op_counts(grouped) == op_counts(native)
    assert _conv_layout(grouped) == _conv_layout(native)
    assert_equivalent(native, grouped, batch=1)


def _conv_layout(model: ir.Model) -> list[tuple[int, tuple[int, ...]]]:
    return [
        (n.attributes.get_int("group", 1), n.inputs[1].const_value.shape) for n in model.graph if n.op_type == "Conv"
    ]


def _random_batchnorm_state(model: ir.Model) -> dict[str, np.ndarray]:
    """The model's state_dict with BatchNorm statistics and affine parameters drawn at random."""
    rng = np.random.default_rng(0)
    state = {name: value.const_value.numpy() for name, value in model.graph.initializers.items()}
    for node in model.graph:
        if node.op_type == "BatchNormalization":
            gamma, beta, mean, var = (value.name for value in node.inputs[1:5])
            channels = state[gamma].shape
            state[gamma] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
            state[var] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
            state[beta] = rng.uniform(-0.3, 0.3, channels).astype(np.float32)
            state[mean] = rng.uniform(-0.3, 0.3, channels).astype(np.float32)
    return state
