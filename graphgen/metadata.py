"""The contract between the builder and everything that reads its models: the ``graphgen.*`` keys.

A built model describes itself in ``ModelProto.metadata_props`` (model-level keys below), so a
server can preprocess images and label classes without being told; passes leave notes on single
nodes in ``NodeProto.metadata_props`` (node-level keys). Every writer and reader names a key
through these constants, never as a string literal, and the strings themselves are pinned by
tests/builder/test_metadata.py: they are stored in model files already written, so renaming one is a
format change that must be made on purpose. A reader that misses a key it needs raises
:class:`MetadataError` naming that key (or says loudly what it cannot do) — it never guesses.

This module imports nothing heavy: the command line and the server both read it at start-up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from graphgen.errors import GraphgenError

# ---- model level: ModelProto.metadata_props ------------------------------------------------
ARCHITECTURE = "graphgen.architecture"  # registry name, e.g. "resnet50"
FAMILY = "graphgen.family"
PAPER = "graphgen.paper"
REFERENCE = "graphgen.reference"  # e.g. "torchvision.models.resnet50"
INPUT = "graphgen.input"  # prose: the input's name, dtype, layout and size
RESOLUTION = "graphgen.resolution"  # the input's height = width
RESIZE = "graphgen.resize"  # Preprocess: the short side is resized to this...
CROP = "graphgen.crop"  # ...then centre-cropped to this square
INTERPOLATION = "graphgen.interpolation"  # "bilinear" or "bicubic"
MEAN = "graphgen.mean"  # JSON list of 3 floats (RGB), applied after scaling to [0, 1]
STD = "graphgen.std"  # JSON list of 3 floats (RGB)
NUM_CLASSES = "graphgen.num_classes"
LABELS = "graphgen.labels"  # IMAGENET_LABELS or NO_LABELS
WEIGHTS = "graphgen.weights"  # the checkpoint's file name, or "random"
VERSION = "graphgen.version"  # the graphgen version that built the model
SCALING = "graphgen.scaling"  # prose: compound scaling's φ / multipliers (EfficientNet)
HEAD = "graphgen.head"  # prose: a replaced classifier, e.g. "10 classes (random, seed 0)"
FEATURES = "graphgen.features"  # where the network was cut to its features ("features", "layer3")

MODEL_KEYS = frozenset(
    {
        ARCHITECTURE,
        FAMILY,
        PAPER,
        REFERENCE,
        INPUT,
        RESOLUTION,
        RESIZE,
        CROP,
        INTERPOLATION,
        MEAN,
        STD,
        NUM_CLASSES,
        LABELS,
        WEIGHTS,
        VERSION,
        SCALING,
        HEAD,
        FEATURES,
    }
)
CLASSIFIER_KEYS = (NUM_CLASSES, LABELS, HEAD)  # what describes the classifier (cut_head drops them)

IMAGENET_LABELS = "imagenet1k"  # LABELS: the 1000 ImageNet-1k classes, in torchvision's order
IMAGENET_CLASSES = 1000
NO_LABELS = "none"  # LABELS: classes without names (class_0, class_1, ...)
RANDOM_WEIGHTS = "random"  # WEIGHTS: a seeded torch-like initialisation

# ---- node level: NodeProto.metadata_props ---------------------------------------------------
FOLDED_FROM = "graphgen.folded_batchnorm"  # on a Conv: the BatchNorm node folded into it
REFERENCE_PARAMS = "graphgen.reference_params"  # on a rewritten node: the reference's parameter count
GROUPED_FROM = "graphgen.grouped_branches"  # on a stacked node: how many parallel branches it replaces
FP16_BOUNDARY = "graphgen.fp16_boundary"  # on the Casts that --fp16 --keep-io-types adds
FOLDED_SCALE = "graphgen.folded_scale"  # on a Conv: the Mul by a constant folded into it
FLATTENED = "graphgen.flattened_concats"  # on a Concat: the nested Concats it took in, comma-separated
REPLACED = "graphgen.replaced"  # on a node a pass made or changed: what it replaced, in words (its description says it)

NODE_KEYS = frozenset({FOLDED_FROM, REFERENCE_PARAMS, GROUPED_FROM, FP16_BOUNDARY, FOLDED_SCALE, FLATTENED, REPLACED})

# ---- other names -----------------------------------------------------------------------------
BLOCKS_DOMAIN = "graphgen.blocks"  # the ONNX domain of the local functions --functions writes


class MetadataError(GraphgenError, ValueError):
    """A model's graphgen metadata lacks a key a reader needs, or holds a value it cannot read."""


def require(metadata: Mapping[str, str], key: str) -> str:
    """``metadata[key]``, or a :class:`MetadataError` that names the missing key."""
    try:
        return metadata[key]
    except KeyError:
        raise MetadataError(f"the model's metadata has no {key!r}") from None


def random_weights_note(metadata: Mapping[str, str]) -> str | None:
    """What to tell whoever builds or serves a model whose WEIGHTS are RANDOM_WEIGHTS (None otherwise:
    a checkpoint's weights, or a model graphgen did not build)."""
    if metadata.get(WEIGHTS) != RANDOM_WEIGHTS:
        return None
    return "random weights (built without --weights): its classes mean nothing"


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the input tensor: resize the short side to ``resize``, centre-crop
    ``crop``², scale to [0, 1], subtract ``mean`` and divide by ``std`` per RGB channel.

    :func:`graphgen.preprocess.image_to_tensor` applies it; a model carries it in its metadata.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def at(self, resolution: int) -> Preprocess:
        """The same rule for another input resolution (the resize margin scales along)."""
        if resolution == self.crop:
            return self
        resize = round(resolution * self.resize / self.crop)
        return Preprocess(resize, resolution, self.mean, self.std, self.interpolation)

    def to_metadata(self) -> dict[str, str]:
        return {
            RESIZE: str(self.resize),
            CROP: str(self.crop),
            INTERPOLATION: self.interpolation,
            MEAN: json.dumps(list(self.mean)),
            STD: json.dumps(list(self.std)),
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> Preprocess:
        """The rule a model carries; :class:`MetadataError` naming the key that is missing or unreadable."""
        return cls(
            resize=_positive_int(metadata, RESIZE),
            crop=_positive_int(metadata, CROP),
            mean=_triple(metadata, MEAN),
            std=_triple(metadata, STD),
            interpolation=_interpolation(metadata),
        )


def _positive_int(metadata: Mapping[str, str], key: str) -> int:
    text = require(metadata, key)
    try:
        value = int(text)
    except ValueError:
        raise MetadataError(f"the model's {key!r} is {text!r}, not a whole number") from None
    if value < 1:
        raise MetadataError(f"the model's {key!r} is {value}, not a positive size")
    return value


def _triple(metadata: Mapping[str, str], key: str) -> tuple[float, float, float]:
    text = require(metadata, key)
    try:
        values = json.loads(text)
        if not isinstance(values, list) or len(values) != 3:
            raise ValueError
        first, second, third = (float(v) for v in values)
    except (ValueError, TypeError):
        raise MetadataError(f"the model's {key!r} is {text!r}, not a JSON list of 3 numbers (R, G, B)") from None
    return first, second, third


def _interpolation(metadata: Mapping[str, str]) -> str:
    value = require(metadata, INTERPOLATION)
    if value not in INTERPOLATIONS:
        raise MetadataError(f"the model's {INTERPOLATION!r} is {value!r}; graphgen knows {', '.join(INTERPOLATIONS)}")
    return value
