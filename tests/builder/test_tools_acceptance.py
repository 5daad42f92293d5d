"""The tools graphgen's users already run accept its graphs as they are.

- onnxsim and onnxslim find nothing to do on every architecture's default build: they remove no
  node and fold nothing (the conversions' results: tests/passes/test_fixed_point.py).
- OpenVINO (CPU, fp32 precision hint: its CPU default is bf16) computes what onnxruntime
  computes, within 1e-4 on unit-std logits, for architectures of every family and for the
  conversion results (a ``--functions`` model after ``convert --inline``).
- ``--opset 13`` and ``--opset 17`` builds of every family are valid at that opset and compute
  what the opset-21 build computes.

CI budget: each architecture is built once per session, at a small resolution where the
architecture allows it, batch 1. The weights are random but scaled so that the logits depend on
the input without depending chaotically on it (see lively_weights): only then do equal outputs
mean something, and the OpenVINO test checks both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from graphgen import registry
from graphgen.build import BuildOptions, save
from graphgen.onnx_io import load_model
from graphgen.passes import fold_batchnorm, fold_repvgg, group_branches
from graphgen.passes.inline import inline_functions
from graphgen.passes.opset import convert_opset
from tests.conftest import unit_std_error
from tests.support.models import built
from tests.support.passes import simplifier_changes

TOLERANCE = 1e-4
SMALL_RESOLUTION = 64
# Where 64 will not do: the classifier's adaptive pooling needs these (AlexNet, VGG), a
# CIFAR network's own, and Inception's unpadded reductions leave nothing below ~75.
RESOLUTION = {
    **{arch.name: arch.resolution for arch in registry.architectures() if arch.family in ("alexnet", "vgg")},
    "wrn28_10": 32,
    "inception_v3": 96,
    "inception_v4": 96,
    "inception_resnet_v2": 96,
}
# One small architecture per family: the --opset builds, and the core of the OpenVINO set.
FAMILY_REPRESENTATIVES = {
    "alexnet": "alexnet",
    "efficientnet": "efficientnet_b0",
    "efficientnet_v2": "efficientnet_v2_s",
    "efficientnet_lite": "efficientnet_lite0",
    "inception": "googlenet",
    "mnasnet": "mnasnet0_5",
    "mobilenet": "mobilenet_v2",
    "parnet": "parnet_s",
    "repvgg": "repvgg_a0",
    "resnet": "resnet18",
    "resnext": "resnext50_32x4d",
    "senet": "seresnet50",
    "squeezenet": "squeezenet1_1",
    "vgg": "vgg11_bn",
    "wide_resnet": "wrn28_10",
}
OPENVINO = [
    *FAMILY_REPRESENTATIVES.values(),
    "inception_v3",
    "inception_resnet_v2",
    "mobilenetv1_100",
    "resnet50d",
]


def resolution_of(name: str) -> int:
    return RESOLUTION.get(name, min(SMALL_RESOLUTION, registry.get(name).resolution))


def small_build(name: str) -> ir.Model:
    """``graphgen build NAME --batch 1`` at the small resolution."""
    return built(name, BuildOptions(batch=1, resolution=resolution_of(name)))


def lively_weights(model: ir.Model, seed: int, *, gain: float = 3.0, bias_std: float = 0.0) -> ir.Model:
    """A copy with uniform weights of variance ``gain / 3 / fan_in``, biases N(0, bias_std) and random
    BatchNorm scales and variances.

    With torch's default initialisation a deep random network ends in logits that hardly depend
    on its input (biases dominate what is left of the signal), which any two runtimes agree on;
    He's gain (6) makes EfficientNets chaotic (a 1e-7 change of the input changes everything).
    Gain 3 without biases keeps every family in between; the tests check both conditions.
    """
    model = model.clone()  # new values, shared tensors: every changed one is replaced, never written into
    rng = np.random.default_rng(seed)
    batchnorm_input = {
        id(node.inputs[index]): index
        for node in model.graph
        if node.op_type == "BatchNormalization"
        for index in range(1, 5)
    }
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is None or not tensor.dtype.is_floating_point() or tensor.shape.rank() == 0:
            continue
        shape = tuple(tensor.shape.numpy())
        role = batchnorm_input.get(id(value))
        if role in (1, 4):  # scale, variance
            array = rng.uniform(0.5, 1.5, shape)
        elif role in (2, 3) or len(shape) == 1:  # shift, mean, biases
            array = rng.normal(0.0, bias_std, shape)
        else:  # Conv [out, in/groups, kh, kw], Gemm [out, in]: fan-in is everything after the first axis
            bound = np.sqrt(gain / int(np.prod(shape[1:])))
            array = rng.uniform(-bound, bound, shape)
        value.const_value = ir.Tensor(array.astype(tensor.dtype.numpy()), name=value.name)
    return model


class ModelFiles:
    """Each model that more than one test reads, built and saved once per session."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: dict[str, Path] = {}

    def get(self, key: str, make: Callable[[], ir.Model]) -> Path:
        if key not in self.paths:
            self.paths[key] = save(make(), self.folder / f"{key.replace(' ', '_')}.onnx")
        return self.paths[key]

    def default(self, name: str) -> Path:
        """The architecture's default build (BatchNorm folded, opset 21) with lively weights."""
        return self.get(name, lambda: lively_weights(small_build(name), seed=len(name)))


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> ModelFiles:
    return ModelFiles(tmp_path_factory.mktemp("tools"))


def _repvgg_folded() -> ir.Model:
    """``build repvgg_a0 --keep-bn``, then ``convert --fold-repvgg --fold-bn``."""
    model = built("repvgg_a0", BuildOptions(batch=1, resolution=64, keep_bn=True))
    source = lively_weights(model, seed=1, bias_std=0.1)  # a plain ReLU network: BatchNorm shifts are safe
    return fold_batchnorm(fold_repvgg(source).model).model


def _resnext_grouped() -> ir.Model:
    """``build resnext50_32x4d --form branches``, then ``convert --group-branches``."""
    options = BuildOptions(batch=1, resolution=64, variant={"form": "branches"})
    return group_branches(lively_weights(built("resnext50_32x4d", options), seed=2)).model


def _resnet50_inlined() -> ir.Model:
    """``build resnet50 --functions``, then ``convert --inline`` (OpenVINO refuses local functions)."""
    outlined = built("resnet50", BuildOptions(batch=1, resolution=64, functions=True))
    return lively_weights(inline_functions(outlined).model, seed=3)


CONVERSIONS: dict[str, Callable[[], ir.Model]] = {
    "repvgg_a0 --fold-repvgg --fold-bn": _repvgg_folded,
    "resnext50_32x4d --group-branches": _resnext_grouped,
    "resnet50 --functions --inline": _resnet50_inlined,
}
KEPT = set(OPENVINO)  # read again by the OpenVINO and --opset tests (every family representative is one)


def _path(model_files: ModelFiles, key: str) -> Path:
    return model_files.get(key, CONVERSIONS[key]) if key in CONVERSIONS else model_files.default(key)


@pytest.mark.parametrize("name", registry.names())
def test_default_builds_are_simplifier_fixed_points(name, model_files):
    """onnxsim and onnxslim remove no node and fold nothing (the conversions: tests/passes/test_fixed_point.py)."""
    pytest.importorskip("onnxsim")
    pytest.importorskip("onnxslim")
    # built here unless another test reads it too (no file: VGGs and RepVGG-B3s are 0.5 GB each)
    changes = simplifier_changes(load_model(model_files.default(name)) if name in KEPT else small_build(name))
    assert changes == {"onnxsim": {}, "onnxslim": {}}, f"{name} is not minimal: {changes}"


@pytest.mark.parametrize("key", [*OPENVINO, *CONVERSIONS])
def test_openvino_computes_what_onnxruntime_computes(key, model_files, ort_cpu):
    ov = pytest.importorskip("openvino")
    path = _path(model_files, key)
    proto = onnx.load(str(path), load_external_data=False)
    assert not proto.functions  # OpenVINO refuses model-local functions: conversions end flat
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    rng = np.random.default_rng(0)
    x = rng.standard_normal([d.dim_value for d in dims], dtype=np.float32)
    session = ort_cpu(path)
    expected = session.run(None, {"input": x})
    other = session.run(None, {"input": rng.standard_normal(x.shape, dtype=np.float32)})
    nudged = session.run(None, {"input": x * np.float32(1 + 1e-6)})
    # the comparison means something only if the logits depend on the input, and not chaotically
    assert unit_std_error(other[0], expected[0]) > 1e-2, f"{key}: logits do not depend on the input"
    assert unit_std_error(nudged[0], expected[0]) < TOLERANCE / 4, f"{key}: logits change chaotically"

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled(x)
    actual = [results[output] for output in compiled.outputs]
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert unit_std_error(a, e) <= TOLERANCE, f"{key}: OpenVINO differs by {unit_std_error(a, e):.2e}"


def test_every_family_has_a_representative():
    assert set(FAMILY_REPRESENTATIVES) == {arch.family for arch in registry.architectures()}
    assert {registry.get(name).family for name in FAMILY_REPRESENTATIVES.values()} == set(FAMILY_REPRESENTATIVES)


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES.values())
def test_older_opsets_compute_the_same(name, model_files, ort_cpu, tmp_path):
    """What ``build --opset 13|17`` writes: the opset-21 build through the opset pass, as build runs it last."""
    reference_path = model_files.default(name)
    reference = load_model(reference_path)
    x = np.random.default_rng(0).standard_normal(reference.graph.inputs[0].shape.numpy(), dtype=np.float32)
    expected = ort_cpu(reference_path).run(None, {"input": x})
    for opset in (13, 17):
        path = save(convert_opset(reference, opset).model, tmp_path / f"opset{opset}.onnx")
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(str(path), full_check=True)
        assert [(o.domain, o.version) for o in proto.opset_import] == [("", opset)]
        assert [(n.name, n.doc_string) for n in proto.graph.node] == [(n.name, n.doc_string) for n in reference.graph]
        assert {p.key: p.value for p in proto.metadata_props} == dict(reference.metadata_props)
        actual = ort_cpu(path).run(None, {"input": x})
        # onnxruntime may pick other kernels or fusions at another opset: equal up to float rounding
        assert all(unit_std_error(a, e) <= 1e-5 for a, e in zip(actual, expected, strict=True)), opset
