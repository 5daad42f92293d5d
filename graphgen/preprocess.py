"""Images → input tensors, following the rule a graphgen model carries in its metadata."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

import numpy as np
from PIL import Image, UnidentifiedImageError

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


class ImageError(ValueError):
    """Bytes that are not a decodable image, or one too large to accept."""


@dataclass(frozen=True)
class ImageSpec:
    """Resize the short side to ``resize``, centre-crop ``crop``², scale to [0, 1], normalise."""

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> ImageSpec:
        """Read the spec from a graphgen model's ``metadata_props``."""
        try:
            return cls(
                resize=int(metadata["graphgen.resize"]),
                crop=int(metadata["graphgen.crop"]),
                mean=tuple(json.loads(metadata["graphgen.mean"])),
                std=tuple(json.loads(metadata["graphgen.std"])),
                interpolation=metadata.get("graphgen.interpolation", "bilinear"),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"model metadata has no usable preprocessing rule ({error})") from None

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One RGB image → a float32 CHW array."""
        image = image.convert("RGB")
        scale = self.resize / min(image.size)
        size = (max(self.crop, round(image.width * scale)), max(self.crop, round(image.height * scale)))
        image = image.resize(size, _RESAMPLE.get(self.interpolation, Image.Resampling.BILINEAR))
        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        scaled = np.asarray(image, dtype=np.float32) / np.float32(255.0)
        normalised = (scaled - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
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
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"image bytes could not be decoded: {error}") from None
    return image


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in class-index order."""
    text = resources.files("graphgen.data").joinpath("imagenet1k.txt").read_text(encoding="utf-8")
    return text.splitlines()


def labels_for(metadata: Mapping[str, str], num_classes: int) -> list[str]:
    """Class names for a model: ImageNet's when it says so, else ``class_<i>``."""
    if metadata.get("graphgen.labels") == "imagenet1k" and num_classes == 1000:
        return imagenet_labels()
    return [f"class_{i}" for i in range(num_classes)]
