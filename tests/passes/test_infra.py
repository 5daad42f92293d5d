"""graphgen's passes on onnx_ir's pass infrastructure: functional, chainable, cleaned by onnx_ir."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from graphgen.build import BuildOptions, build
from graphgen.passes import (
    CutHeadPass,
    FoldBatchNormPass,
    FoldRepVGGPass,
    GroupBranchesPass,
    PassResult,
    ReplaceHeadPass,
    ToFp16Pass,
    fold_batchnorm,
    to_fp16,
)
from graphgen.passes.names import Names
from tests.support.passes import assert_equivalent, fingerprint, op_counts, random_inputs, relative_error, run

FLOAT = ir.DataType.FLOAT


@pytest.fixture(scope="module")
def resnet18_bn() -> ir.Model:
    return build("resnet18", BuildOptions(keep_bn=True, resolution=32))


@pytest.mark.parametrize(
    "make",
    [FoldBatchNormPass, FoldRepVGGPass, GroupBranchesPass, ToFp16Pass, CutHeadPass, lambda: ReplaceHeadPass(10)],
    ids=["fold-bn", "fold-repvgg", "group-branches", "fp16", "cut", "head"],
)
def test_every_pass_is_functional(make) -> None:
    """Declared functional to onnx_ir: it neither works in place nor changes its input."""
    rewrite = make()
    assert isinstance(rewrite, ir.passes.FunctionalPass)
    assert not rewrite.in_place and not rewrite.changes_input


def test_sequential_chains_graphgen_passes(resnet18_bn: ir.Model) -> None:
    """onnx_ir's Sequential runs graphgen's passes like its own and gives what the functions give one by one."""
    before = fingerprint(resnet18_bn)
    chain = ir.passes.Sequential(FoldBatchNormPass(), ir.passes.common.TopologicalSortPass(), ToFp16Pass())
    assert not chain.changes_input
    result = chain(resnet18_bn)
    assert result.modified and fingerprint(resnet18_bn) == before
    assert fingerprint(result.model) == fingerprint(to_fp16(fold_batchnorm(resnet18_bn).model).model)
    assert "BatchNormalization" not in op_counts(result.model)
    inputs = random_inputs(resnet18_bn)
    (expected,), (actual,) = run(resnet18_bn, inputs), run(result.model, {"input": inputs["input"].astype(np.float16)})
    assert relative_error(actual, expected) < 5e-3


def _conv_bn_through_identities() -> ir.Model:
    """Conv -> BatchNorm whose γ reaches it through an Identity (TorchScript shares equal tensors so), plus a dead Relu."""
    x = ir.Value(name="x", shape=ir.Shape([1, 2, 4, 4]), type=ir.TensorType(FLOAT))
    rng = np.random.default_rng(0)

    def initializer(name: str, array: np.ndarray) -> ir.Value:
        return ir.Value(name=name, const_value=ir.Tensor(array.astype(np.float32), name=name))

    weight = initializer("conv.weight", rng.standard_normal((3, 2, 1, 1)))
    gamma, beta = initializer("gamma", rng.uniform(0.5, 1.5, 3)), initializer("beta", rng.standard_normal(3))
    mean, var = initializer("mean", rng.standard_normal(3)), initializer("var", rng.uniform(0.5, 1.5, 3))
    identity = ir.node("Identity", [gamma], name="shared_gamma")
    conv = ir.node("Conv", [x, weight], name="conv")
    bn = ir.node("BatchNormalization", [conv.outputs[0], identity.outputs[0], beta, mean, var], name="bn")
    dead = ir.node("Relu", [x], name="unused")
    for node in (identity, conv, bn, dead):
        node.outputs[0].name = f"{node.name}_out"
    bn.outputs[0].name = "y"
    graph = ir.Graph(
        [x],
        [bn.outputs[0]],
        nodes=[identity, conv, bn, dead],
        initializers=[weight, gamma, beta, mean, var],
        opset_imports={"": 21},
    )
    return ir.Model(graph, ir_version=10)


def test_what_a_rewrite_leaves_unread_is_removed() -> None:
    """onnx_ir's RemoveUnusedNodesPass runs after the rewrite: the Identity, dead nodes and old tensors go."""
    model = _conv_bn_through_identities()
    result = fold_batchnorm(model)
    assert isinstance(result, PassResult) and result.rewrites == 1
    assert [node.op_type for node in result.model.graph] == ["Conv"]
    assert sorted(result.model.graph.initializers) == ["conv.bias", "conv.weight"]
    assert len(model.graph) == 4  # the input keeps everything
    assert_equivalent(model, result.model, batch=1)


def test_fresh_names_avoid_values_and_nodes() -> None:
    model = _conv_bn_through_identities()
    names = Names(model.graph)
    assert [names.fresh(base) for base in ("conv", "conv", "y", "gamma", "new")] == [
        "conv_1",
        "conv_2",
        "y_1",
        "gamma_1",
        "new",
    ]


def test_made_nodes_say_what_they_replaced(resnet18_bn: ir.Model) -> None:
    """A new head and the float16 boundary casts carry descriptions like every built node."""
    model = ToFp16Pass(keep_io_types=True)(ReplaceHeadPass(10)(fold_batchnorm(resnet18_bn).model).model).model
    described = {node.name: node.doc_string for node in model.graph}
    assert all(described.values())
    assert described["fc"] == "Linear fc (new head: 10 classes (random, seed 0) in place of 1000)"
    assert described["input.to_fp16"].startswith("Cast of input 'input' to float16")
    assert described["logits.to_fp32"].startswith("Cast of output 'logits' back to float32")
