"""The metadata contract (graphgen/metadata.py): pinned key strings, Preprocess round trip, loud failures."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graphgen import metadata as meta
from graphgen import registry
from graphgen.build import BuildOptions, build
from graphgen.metadata import MetadataError, Preprocess
from graphgen.preprocess import image_to_tensor, labels_for

ROOT = Path(__file__).resolve().parents[2]

# The strings stored in model files already written: changing one here is a format change.
PINNED = {
    "ARCHITECTURE": "graphgen.architecture",
    "FAMILY": "graphgen.family",
    "PAPER": "graphgen.paper",
    "REFERENCE": "graphgen.reference",
    "INPUT": "graphgen.input",
    "RESOLUTION": "graphgen.resolution",
    "RESIZE": "graphgen.resize",
    "CROP": "graphgen.crop",
    "INTERPOLATION": "graphgen.interpolation",
    "MEAN": "graphgen.mean",
    "STD": "graphgen.std",
    "NUM_CLASSES": "graphgen.num_classes",
    "LABELS": "graphgen.labels",
    "WEIGHTS": "graphgen.weights",
    "VERSION": "graphgen.version",
    "SCALING": "graphgen.scaling",
    "HEAD": "graphgen.head",
    "FEATURES": "graphgen.features",
    "FOLDED_FROM": "graphgen.folded_batchnorm",
    "REFERENCE_PARAMS": "graphgen.reference_params",
    "GROUPED_FROM": "graphgen.grouped_branches",
    "FP16_BOUNDARY": "graphgen.fp16_boundary",
    "FOLDED_SCALE": "graphgen.folded_scale",
    "FLATTENED": "graphgen.flattened_concats",
    "REPLACED": "graphgen.replaced",
}


def test_every_key_is_pinned():
    assert {name: getattr(meta, name) for name in PINNED} == PINNED
    assert set(PINNED.values()) == meta.MODEL_KEYS | meta.NODE_KEYS
    assert not meta.MODEL_KEYS & meta.NODE_KEYS


def test_no_module_spells_a_key_out():
    """Readers and writers name keys through graphgen.metadata, so a rename there reaches all of them."""
    keys = meta.MODEL_KEYS | meta.NODE_KEYS | {meta.BLOCKS_DOMAIN}
    offenders = []
    for folder in ("graphgen", "server/graphgen_server", "clients/graphgen_client"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "metadata.py" and path.parent.name == "graphgen":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value in keys:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not offenders, offenders


@pytest.mark.parametrize("arch", registry.architectures(), ids=lambda a: a.name)
def test_every_architecture_rule_round_trips(arch):
    for resolution in (arch.resolution, 64):
        rule = arch.preprocess.at(resolution)
        written = rule.to_metadata()
        assert set(written) <= meta.MODEL_KEYS
        assert all(isinstance(value, str) for value in written.values())
        assert Preprocess.from_metadata(written) == rule


@pytest.fixture(scope="module")
def tiny():
    return build("efficientnet_lite0", BuildOptions(resolution=32, num_classes=10))


def test_a_built_model_writes_known_keys_only(tiny):
    model_keys = {key for key in tiny.metadata_props if key.startswith("graphgen.")}
    assert model_keys <= meta.MODEL_KEYS, model_keys - meta.MODEL_KEYS
    node_keys = {key for node in tiny.graph for key in node.metadata_props if key.startswith("graphgen.")}
    assert node_keys and node_keys <= meta.NODE_KEYS, node_keys - meta.NODE_KEYS
    rule = Preprocess.from_metadata(tiny.metadata_props)
    assert rule == registry.get("efficientnet_lite0").preprocess.at(32)
    assert tiny.metadata_props[meta.LABELS] == meta.NO_LABELS and tiny.metadata_props[meta.NUM_CLASSES] == "10"


@pytest.mark.parametrize("key", [meta.RESIZE, meta.CROP, meta.MEAN, meta.STD, meta.INTERPOLATION])
def test_a_missing_key_is_named(key):
    written = Preprocess(256, 224).to_metadata()
    del written[key]
    with pytest.raises(MetadataError, match=key.replace(".", r"\.")):
        Preprocess.from_metadata(written)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        (meta.CROP, "224px", "not a whole number"),
        (meta.RESIZE, "0", "not a positive size"),
        (meta.MEAN, "[0.5, 0.5]", "3 numbers"),
        (meta.STD, "not json", "3 numbers"),
        (meta.INTERPOLATION, "lanczos", "bilinear, bicubic"),
    ],
)
def test_an_unreadable_value_is_named(key, value, says):
    written = Preprocess(256, 224).to_metadata() | {key: value}
    with pytest.raises(MetadataError, match=says):
        Preprocess.from_metadata(written)


@pytest.mark.parametrize("interpolation", meta.INTERPOLATIONS)
def test_image_to_tensor_follows_the_rule(interpolation):
    rule = Preprocess(40, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), interpolation)
    image = Image.fromarray(np.full((60, 80, 3), 255, np.uint8))
    tensor = image_to_tensor(image, rule)
    assert tensor.shape == (3, 32, 32) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor, (1.0 - 0.5) / 0.25)


def test_labels_follow_the_labels_key():
    assert len(labels_for({meta.LABELS: meta.IMAGENET_LABELS}, 1000)) == 1000
    assert labels_for({meta.LABELS: meta.NO_LABELS}, 2) == ["class_0", "class_1"]
    assert labels_for({meta.LABELS: meta.IMAGENET_LABELS}, 3) == ["class_0", "class_1", "class_2"]
