"""Layer statistics reproduce the lecture's AlexNet table and torchvision's published totals."""

from __future__ import annotations

import pytest

from graphgen.build import BuildOptions
from graphgen.stats import MIB, format_table, layer_stats
from tests.support.models import built


@pytest.fixture(scope="module")
def alexnet_2012_at_128():
    return layer_stats(built("alexnet_2012"), batch=128)


def test_seed_alexnet_conv1_figures(alexnet_2012_at_128):
    conv1 = next(row for row in alexnet_2012_at_128.rows if row.name == "features.0")
    assert conv1.params == 34_944  # (11·11·3 + 1) · 96
    assert conv1.output_shape == [128, 96, 55, 55]  # (224 − 11 + 2·2) / 4 + 1 = 55
    assert conv1.flops / 1e9 == pytest.approx(27.0, rel=0.01)  # "≈ 27 Gflops" for the batch of 128
    # "twice the activation size and 3-4 times the #params: around 283.6 MB"
    assert conv1.training_memory_bytes / MIB == pytest.approx(283.6, rel=0.005)


def test_seed_alexnet_input_batch_is_73_5_mib(alexnet_2012_at_128):
    first = alexnet_2012_at_128.rows[0]
    assert first.op == "Input"
    assert first.activation_bytes / MIB == pytest.approx(73.5, abs=0.05)  # 128·150528·4 bytes


def test_alexnet_2012_parameters_by_derivation(alexnet_2012_at_128):
    # conv1..5 with groups (2 on conv2/4/5) + fc6..8, weights and biases:
    convs = (11 * 11 * 3 * 96 + 96) + (5 * 5 * 48 * 256 + 256) + (3 * 3 * 256 * 384 + 384)
    convs += (3 * 3 * 192 * 384 + 384) + (3 * 3 * 192 * 256 + 256)
    dense = (9216 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert alexnet_2012_at_128.params == convs + dense == 60_965_224


def test_zfnet_parameters_by_derivation():
    convs = (7 * 7 * 3 * 96 + 96) + (5 * 5 * 96 * 256 + 256) + (3 * 3 * 256 * 384 + 384)
    convs += (3 * 3 * 384 * 384 + 384) + (3 * 3 * 384 * 256 + 256)
    dense = (9216 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    stats = layer_stats(built("zfnet"))
    assert stats.params == convs + dense == 62_357_608
    assert [row.output_shape[2] for row in stats.rows if row.op.startswith("MaxPool")] == [55, 13, 6]


@pytest.mark.parametrize(("name", "gmacs"), [("alexnet", 0.714), ("vgg16", 15.470), ("resnet50", 4.089)])
def test_totals_match_torchvision_published_column(name, gmacs):
    assert layer_stats(built(name)).macs / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_folded_and_unfolded_forms_agree():
    folded, kept = layer_stats(built("resnet18")), layer_stats(built("resnet18", BuildOptions(keep_bn=True)))
    assert folded.params == kept.params == 11_689_512
    assert folded.macs == kept.macs
    # The graph's own initializers differ: BN running statistics are gone once folded.
    assert folded.total("initializer_elements") < kept.total("initializer_elements")


def test_stats_scale_with_batch():
    one, eight = layer_stats(built("resnet18"), 1), layer_stats(built("resnet18"), 8)
    assert eight.macs == 8 * one.macs
    assert eight.params == one.params


def test_table_has_a_totals_row_and_states_conventions(alexnet_2012_at_128):
    table = format_table(alexnet_2012_at_128)
    assert "TOTAL" in table and "60,965,224" in table
    assert "FLOPs = 2 x MACs" in table


def test_silu_and_gates_are_the_activation_of_their_layer():
    stats = layer_stats(built("efficientnet_b0"))
    ops = {row.name: row.op for row in stats.rows}
    assert ops["features.0.0"] == "Conv+SiLU"
    assert ops["features.1.0.block.1.fc2"] == "Conv+Sigmoid"  # the squeeze-and-excitation gate
    assert not any(row.op in ("Sigmoid", "Mul") and row.name.endswith("sigmoid") for row in stats.rows)
    assert stats.params == 5_288_548
