"""What the registry-wide tests do not cover for MnasNet.

Depth rounding at any width against torchvision's own function (and whole networks at widths
graphgen does not register), a checkpoint saved exactly as torchvision's published ones are
(``torch.save`` of ``state_dict()``: version metadata, ``num_batches_tracked``) loading by name,
and the version-1 stem quirk: refused by name at scaled widths, identical at width 1.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from graphgen import cli
from graphgen.architecture import Network
from graphgen.build import BuildOptions, build, trace
from graphgen.checkpoint import CheckpointError
from graphgen.models.mnasnet import STACKS, MNASNet, scaled
from graphgen.stats import count_parameters
from tests.builder.test_reference_parity import randomise_batchnorm

torch = pytest.importorskip("torch")
tv_mnasnet = pytest.importorskip("torchvision.models.mnasnet")

ALPHAS = [round(0.05 * i, 2) for i in range(1, 61)]  # 0.05 … 3.0


def test_widths_round_as_torchvision_does():
    for alpha in ALPHAS:
        ours = [scaled(c, alpha) for c in (32, 16, *(row.out for row in STACKS))]
        assert ours == tv_mnasnet._get_depths(alpha), alpha


@pytest.mark.parametrize("alpha", [0.35, 1.75])
def test_unregistered_widths_count_as_torchvision(alpha):
    graph = trace(Network(MNASNet(alpha, 1000)), "m", 224, 1)
    ours = count_parameters(ir.Model(graph, ir_version=10)).parameters
    assert ours == sum(p.numel() for p in tv_mnasnet.MNASNet(alpha).parameters())


def published_style_checkpoint(model, path, version: int = 2):
    """As torchvision's weight files are made: the state_dict itself, with its ``_metadata`` version."""
    state = model.state_dict()
    state._metadata[""]["version"] = version  # version 1: saved by torchvision before the stem was scaled
    torch.save(state, path)
    return path


def test_torchvision_checkpoint_loads_every_key_by_name(tmp_path):
    model = randomise_batchnorm(tv_mnasnet.mnasnet0_5(weights=None).eval())
    checkpoint = published_style_checkpoint(model, tmp_path / "mnasnet0_5.pth")
    built = build("mnasnet0_5", BuildOptions(weights=checkpoint, keep_bn=True))

    expected = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(built.graph.initializers) >= set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(built.graph.initializers[key].const_value.numpy(), value, err_msg=key)
    names = {node.name for node in built.graph}
    assert {"layers.0", "layers.8.0.layers.3", "layers.8.1.add", "classifier.1"} <= names
    assert "layers.8.0.add" not in names  # a stack's first block changes shape: no residual


def version_1_form(alpha: float):
    """A torchvision MNASNet in the version-1 form (32/16 stem), made by torchvision's own loading code."""
    model = tv_mnasnet.MNASNet(alpha)
    with pytest.warns(UserWarning, match="previous version"):
        model._load_from_state_dict({}, "", {"version": 1}, False, [], [], [])
    return randomise_batchnorm(model.eval())


def test_version_1_checkpoint_of_a_scaled_width_is_refused_by_name(tmp_path, capsys):
    checkpoint = published_style_checkpoint(version_1_form(0.5), tmp_path / "v1.pth", version=1)
    with pytest.raises(CheckpointError, match=r"version-1 MNASNet checkpoint.*32 channels.*this width's has 16"):
        build("mnasnet0_5", BuildOptions(weights=checkpoint))
    assert cli.main(["build", "mnasnet0_5", "--weights", str(checkpoint), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "version-1 MNASNet checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_version_1_checkpoint_at_width_1_loads(tmp_path):
    # At α = 1 torchvision loads a version-1 checkpoint unchanged: the two stems are the same.
    model = randomise_batchnorm(tv_mnasnet.mnasnet1_0(weights=None).eval())
    checkpoint = published_style_checkpoint(model, tmp_path / "v1.pth", version=1)
    reloaded = tv_mnasnet.mnasnet1_0(weights=None)
    reloaded.load_state_dict(torch.load(checkpoint))
    built = build("mnasnet1_0", BuildOptions(weights=checkpoint, keep_bn=True))
    for key in ("layers.0.weight", "layers.7.running_var"):
        expected = reloaded.state_dict()[key].numpy()
        np.testing.assert_array_equal(built.graph.initializers[key].const_value.numpy(), expected, err_msg=key)
