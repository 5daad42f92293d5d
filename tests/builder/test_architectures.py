"""Every registered architecture builds, passes the full ONNX checker, runs, and counts right."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from graphgen import registry
from graphgen.build import BuildOptions, build, save
from graphgen.stats import layer_stats
from tests.support.models import built

ARCHITECTURES = registry.names()


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_builds_checks_runs_and_counts(name, tmp_path, ort_cpu):
    arch = registry.get(name)
    path = save(built(name), tmp_path / f"{name}.onnx")

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    shaped = {v.name for v in (*proto.graph.value_info, *proto.graph.output)}
    unshaped = [out for node in proto.graph.node for out in node.output if out not in shaped]
    assert not unshaped, f"edges without a shape: {unshaped[:5]}"
    assert proto.metadata_props and {p.key for p in proto.metadata_props} >= {"graphgen.architecture", "graphgen.mean"}

    x = np.random.default_rng(0).standard_normal((2, 3, arch.resolution, arch.resolution), dtype=np.float32)
    (logits, *_) = ort_cpu(path).run(None, {"input": x})
    assert logits.shape == (2, arch.num_classes)
    assert np.isfinite(logits).all()

    stats = layer_stats(onnx_ir_load(path), batch=1)
    if arch.reference_params is not None:
        assert stats.params == arch.reference_params
    if arch.reference_gmacs is not None:
        assert stats.macs / 1e9 == pytest.approx(arch.reference_gmacs, rel=0.01)


def onnx_ir_load(path):
    import onnx_ir as ir

    return ir.load(path)


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn", "efficientnet_lite0"])
def test_keep_bn_form_has_batchnorm_and_the_same_parameters(name):
    folded = built(name)
    kept = built(name, BuildOptions(keep_bn=True))
    assert not any(node.op_type == "BatchNormalization" for node in folded.graph)
    assert any(node.op_type == "BatchNormalization" for node in kept.graph)
    assert layer_stats(folded).params == layer_stats(kept).params


def test_names_mirror_state_dict_keys():
    model = built("resnet50", BuildOptions(keep_bn=True))
    assert "layer3.1.conv2.weight" in model.graph.initializers
    assert "layer3.1.bn2.running_var" in model.graph.initializers
    names = [node.name for node in model.graph]
    assert "layer3.1.conv2" in names and "layer3.1.add" in names
    assert len(names) == len(set(names))


def test_seed_makes_initialisation_deterministic():
    a, b, c = (build("resnet18", BuildOptions(seed=s)) for s in (7, 7, 8))
    weight = lambda m: m.graph.initializers["fc.weight"].const_value.numpy()  # noqa: E731
    assert np.array_equal(weight(a), weight(b))
    assert not np.array_equal(weight(a), weight(c))


def test_num_classes_resolution_and_fixed_batch(tmp_path, ort_cpu):
    path = save(build("resnet18", BuildOptions(num_classes=10, resolution=160, batch=3)), tmp_path / "r.onnx")
    session = ort_cpu(path)
    assert session.get_inputs()[0].shape == [3, 3, 160, 160]
    (logits,) = session.run(None, {"input": np.zeros((3, 3, 160, 160), np.float32)})
    assert logits.shape == (3, 10)


def test_uneven_adaptive_pool_is_refused_clearly():
    with pytest.raises(ValueError, match="uneven windows"):
        build("alexnet", BuildOptions(resolution=300))


def test_unknown_variant_option_is_refused():
    with pytest.raises(ValueError, match="does not take --deploy"):
        build("resnet18", BuildOptions(variant={"deploy": True}))
