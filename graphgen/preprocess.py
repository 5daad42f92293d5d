"""Images → input tensors, following the rule a graphgen model carries in its metadata."""

from __future__ import annotations

import io
from collections.abc import Mapping
from importlib import resources

import numpy as np
from PIL import Image, UnidentifiedImageError

from graphgen.errors import GraphgenError
from graphgen.files import looks_like_text
from graphgen.metadata import IMAGENET_CLASSES, IMAGENET_LABELS, LABELS, Preprocess

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


class ImageError(GraphgenError, ValueError):
    """Bytes that are not a decodable image, or one too large to accept."""


def image_to_tensor(image: Image.Image, rule: Preprocess) -> np.ndarray:
    """One image → a float32 CHW array, as ``rule`` (a model's :class:`~graphgen.metadata.Preprocess`) says."""
    image = image.convert("RGB")
    scale = rule.resize / min(image.size)
    size = (max(rule.crop, round(image.width * scale)), max(rule.crop, round(image.height * scale)))
    image = image.resize(size, _RESAMPLE[rule.interpolation])
    left, top = (size[0] - rule.crop) // 2, (size[1] - rule.crop) // 2
    image = image.crop((left, top, left + rule.crop, top + rule.crop))
    scaled = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    normalised = (scaled - np.asarray(rule.mean, np.float32)) / np.asarray(rule.std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def decode_image(data: bytes, max_pixels: int = 50_000_000) -> Image.Image:
    """Decode JPEG/PNG/... bytes, refusing empty, corrupt or oversized images with a clear reason."""
    if not data:
        raise ImageError("image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > max_pixels:
            raise ImageError(f"image is {image.width}x{image.height}, over the limit of {max_pixels} pixels")
        image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        text = " (they look like text)" if looks_like_text(data[:512]) else ""
        raise ImageError(f"not an image{text}: graphgen reads JPEG, PNG, BMP, GIF, TIFF and WebP") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"the image is too large to decode safely: {error}") from None
    except (OSError, ValueError) as error:  # PIL's words for damaged data, e.g. "image file is truncated"
        raise ImageError(f"a damaged image: {error}") from None
    return image


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in class-index order."""
    text = resources.files("graphgen.data").joinpath("imagenet1k.txt").read_text(encoding="utf-8")
    return text.splitlines()


def labels_for(metadata: Mapping[str, str], num_classes: int) -> list[str]:
    """Class names for a model: ImageNet's when it says so, else ``class_<i>``."""
    if metadata.get(LABELS) == IMAGENET_LABELS and num_classes == IMAGENET_CLASSES:
        return imagenet_labels()
    return [f"class_{i}" for i in range(num_classes)]
