"""A tiny real graphgen graph (ResNet-18 at 32×32, 10 classes) and a folder of small images for int8 tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphgen.build import BuildOptions, build
from tests.support.server import encode


@pytest.fixture(scope="session")
def resnet18():
    return build("resnet18", BuildOptions(resolution=32, num_classes=10))


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """Eight 48×40 images: smooth colour fields with noise, as PNG files."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:40, 0:48]
    for index in range(8):
        phase = rng.uniform(0, 6.3, 3)
        field = np.stack([np.sin(x / (5 + index) + phase[c]) + np.cos(y / (7 + c) - phase[c]) for c in range(3)], -1)
        pixels = np.clip(127 + 60 * field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        (folder / f"image{index}.png").write_bytes(encode(pixels))
    return folder
