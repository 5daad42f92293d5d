"""The images int8 conversion calibrates on and verifies with, as the model itself preprocesses them.

A calibration decides every activation's int8 range from what the model computes on real inputs,
so the inputs must be what the model will see: images, resized, cropped and normalised by the
rule in the model's own metadata (:class:`~graphgen.metadata.Preprocess`, applied by
:func:`~graphgen.preprocess.image_to_tensor`, the server's rule). Random tensors would calibrate
ranges no photo produces and say nothing about accuracy, so without images nothing is quantized.

Verification needs images the calibration never saw: ranges fitted to the very images they are
judged on flatter the result. :func:`hold_out` sets some of the calibration files aside when no
verification images are given.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphgen.errors import UserError
from graphgen.metadata import Preprocess
from graphgen.preprocess import ImageError, decode_image, image_to_tensor

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
HOLD_OUT_EVERY = 4  # without verification images, every 4th calibration file is held out


def image_files(paths: Sequence[str | Path], flag: str = "--calibrate") -> list[Path]:
    """The image files named by ``paths``: files as given, folders by their image files (sorted, recursive).

    :class:`UserError` for a path that does not exist, a folder without images, or no path at all.
    """
    if not paths:
        raise UserError(
            f"{flag} names no images: int8 ranges are calibrated on real images preprocessed as the model "
            "says (a random calibration cannot judge accuracy); give a folder or image files"
        )
    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                raise UserError(f"{flag} {given}: the folder holds no images ({suffixes})")
            files.extend(found)
        elif given.is_file():
            files.append(given)
        else:
            raise UserError(f"{flag} {given}: no such file or folder")
    return list(dict.fromkeys(files))  # a file named twice is one image


def hold_out(files: Sequence[Path], every: int = HOLD_OUT_EVERY) -> tuple[list[Path], list[Path]]:
    """(calibration, held out): every ``every``-th file held out, at least one; both sides non-empty."""
    if len(files) < 2:
        raise UserError(
            "--verify judges int8 on images the calibration did not see: give --verify-images, "
            f"or at least 2 --calibrate images to hold some out (got {len(files)})"
        )
    held = list(files[every - 1 :: every]) or [files[-1]]
    chosen = set(held)
    return [f for f in files if f not in chosen], held


@dataclass(frozen=True)
class ImageSet:
    """Images as the model's input tensors (one CHW float32 array per image), with their files."""

    files: tuple[Path, ...]
    tensors: tuple[np.ndarray, ...]

    @classmethod
    def load(cls, files: Sequence[Path], rule: Preprocess, flag: str = "--calibrate") -> ImageSet:
        tensors = []
        for path in files:
            try:
                image = decode_image(path.read_bytes())
            except ImageError as error:
                raise UserError(f"{flag} {path}: {error}") from None
            except OSError as error:
                raise UserError(f"{flag} {path}: cannot read it ({error.strerror or error})") from None
            tensors.append(image_to_tensor(image, rule))
        return cls(tuple(files), tuple(tensors))

    def __len__(self) -> int:
        return len(self.tensors)

    def feeds(self, input_name: str) -> Iterator[dict[str, np.ndarray]]:
        """One feed per image, a batch of one (a graphgen model's batch may be fixed at 1)."""
        for tensor in self.tensors:
            yield {input_name: tensor[None]}
