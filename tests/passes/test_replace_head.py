"""replace_head / cut_head: network surgery for transfer learning, checked against the features."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from graphgen.build import BuildOptions, build
from graphgen.passes import HeadError, cut_head, replace_head
from tests.support.passes import check_contract, export, random_inputs, run

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def resnet18() -> ir.Model:
    return build("resnet18", BuildOptions(resolution=32))


def _features_and_logits(model: ir.Model, new: ir.Model) -> tuple[np.ndarray, np.ndarray]:
    inputs = random_inputs(model)
    return run(cut_head(model).model, inputs)[0], run(new, inputs)[0]


def test_random_head(resnet18: ir.Model) -> None:
    new = check_contract(lambda m: replace_head(m, 10, seed=3), resnet18, expect=1)
    fc = next(node for node in new.graph if node.name == "fc")
    weight, bias = (fc.inputs[i].const_value.numpy() for i in (1, 2))
    assert weight.shape == (10, 512) and bias.shape == (10,)
    assert np.abs(weight).max() <= 1 / np.sqrt(512)  # torch's Linear initialisation bound
    features, logits = _features_and_logits(resnet18, new)
    assert logits.shape == (2, 10) and list(new.graph.outputs[0].shape)[1] == 10
    np.testing.assert_allclose(logits, features @ weight.T + bias, rtol=1e-5, atol=1e-5)
    assert new.metadata_props["graphgen.num_classes"] == "10" and new.metadata_props["graphgen.labels"] == "none"
    assert (
        replace_head(resnet18, 10, seed=4).model.graph.initializers["fc.weight"].const_value.numpy()[0, 0]
        != weight[0, 0]
    )


@pytest.mark.parametrize("keys", [("fc.weight", "fc.bias"), ("weight", "bias")], ids=["own-names", "linear-names"])
def test_head_from_checkpoint(resnet18: ir.Model, tmp_path, keys: tuple[str, str]) -> None:
    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((7, 512)).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    path = tmp_path / "head.npz"
    np.savez(path, **{keys[0]: weight, keys[1]: bias})
    new = check_contract(lambda m: replace_head(m, weights=path), resnet18, expect=1)
    features, logits = _features_and_logits(resnet18, new)
    np.testing.assert_allclose(logits, features @ weight.T + bias, rtol=1e-5, atol=1e-4)
    assert new.metadata_props["graphgen.head"] == "7 classes (from head.npz)"


def test_the_same_head_changes_nothing(resnet18: ir.Model) -> None:
    own = {name: resnet18.graph.initializers[name].const_value.numpy() for name in ("fc.weight", "fc.bias")}
    assert replace_head(resnet18, weights=own).rewrites == 0


def test_bad_heads_are_refused(resnet18: ir.Model) -> None:
    with pytest.raises(HeadError, match=r"needs \[classes, 512\]"):
        replace_head(resnet18, weights={"weight": np.zeros((3, 100), np.float32)})
    with pytest.raises(HeadError, match="has 3 classes, not 5"):
        replace_head(resnet18, 5, weights={"weight": np.zeros((3, 512), np.float32)})
    with pytest.raises(HeadError, match=r"no classifier weight 'fc\.weight'"):
        replace_head(resnet18, weights={"something": np.zeros(3, np.float32)})


def test_cut_to_a_stage(resnet18: ir.Model) -> None:
    cut = check_contract(lambda m: cut_head(m, "layer3"), resnet18, expect=1)
    assert [v.name for v in cut.graph.outputs] == ["features"]
    assert not any(node.name.startswith(("layer4", "fc")) for node in cut.graph)
    # the feature map equals that tensor inside the full model
    full = resnet18.clone()
    inner = next(node for node in reversed(list(full.graph)) if node.name.startswith("layer3.")).outputs[0]
    full.graph.outputs.append(inner)
    inputs = random_inputs(resnet18)
    expected, actual = run(full, inputs)[1], run(cut, inputs)[0]
    assert actual.shape == (2, 256, 2, 2)
    np.testing.assert_array_equal(actual, expected)
    assert cut.metadata_props["graphgen.features"] == "layer3" and "graphgen.labels" not in cut.metadata_props
    with pytest.raises(HeadError, match=r"no node named 'layer9'.*layer1"):
        cut_head(resnet18, "layer9")


def test_cut_to_pooled_features(resnet18: ir.Model) -> None:
    cut = check_contract(cut_head, resnet18, expect=1)
    assert cut.graph.outputs[0].name == "features" and list(cut.graph.outputs[0].shape)[1] == 512
    assert "Gemm" not in {node.op_type for node in cut.graph}


class ConvClassifier(torch.nn.Module):
    """SqueezeNet's head: a 1×1 conv to the classes, ReLU, global pooling, flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.classifier = torch.nn.Sequential(
            torch.nn.Conv2d(16, 6, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
        )

    def forward(self, x):
        return self.classifier(torch.relu(self.features(x)))


class MatMulClassifier(torch.nn.Module):
    """A head written as x @ W + b, which exports as MatMul and Add."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.weight = torch.nn.Parameter(torch.randn(16, 6))
        self.bias = torch.nn.Parameter(torch.randn(6))

    def forward(self, x):
        return torch.softmax(
            torch.flatten(torch.mean(self.features(x), (2, 3), keepdim=True), 1) @ self.weight + self.bias, 1
        )


@pytest.mark.parametrize("module", [ConvClassifier, MatMulClassifier], ids=["conv-1x1", "matmul-add"])
def test_torch_exported_heads(tmp_path, module) -> None:
    model = export(module(), (2, 3, 8, 8), tmp_path / "head.onnx")
    new = check_contract(lambda m: replace_head(m, 4, seed=1), model, expect=1)
    inputs = random_inputs(model)
    assert run(new, inputs)[0].shape == (2, 4)
    assert list(new.graph.outputs[0].shape)[1] == 4
