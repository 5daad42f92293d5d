"""The architecture registry: every buildable network, with what a user or server needs to know.

Each family module (``graphgen/models/*.py``) registers its variants at import time. An entry
holds the constructor of the module tree plus the facts that travel into the ONNX metadata:
default resolution, preprocessing, the reference implementation and its published figures.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from graphgen import nn
from graphgen.metadata import IMAGENET_MEAN, IMAGENET_STD, Preprocess


def imagenet_eval(crop: int, resize: int | None = None, interpolation: str = "bilinear") -> Preprocess:
    """torchvision's evaluation transform: resize to crop/0.875 (256 for 224), centre-crop."""
    return Preprocess(resize or round(crop / 0.875), crop, interpolation=interpolation)


def timm_eval(
    crop: int,
    crop_pct: float = 0.875,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> Preprocess:
    """timm's evaluation transform from a model's pretrained config: resize to floor(crop / crop_pct), bicubic."""
    return Preprocess(math.floor(crop / crop_pct), crop, mean, std, "bicubic")


@dataclass(frozen=True)
class Architecture:
    """One buildable network.

    ``make(num_classes, **options)`` returns the module tree; ``options`` names the variant
    options it accepts (``phi``, ``width``, ``deploy``, ``form``, ``aux``, ``activation``). A
    module may set ``default_resolution`` (compound scaling does) and ``output_names`` (extra
    outputs such as auxiliary heads) and ``adapt_state_dict(state) -> state`` (maps a reference
    checkpoint onto a form whose keys differ, e.g. ResNeXt's parallel branches). ``head`` is the
    path of the final classifier, replaced when a different number of classes is asked for.

    ``reference`` is ``torchvision.models.<fn>`` or ``timm.<name>`` where one exists — the
    reference-parity tests build it with ``reference_kwargs`` — or prose naming the source.
    ``reference_params`` and ``reference_gmacs`` are its published figures (GMACs at the default
    resolution), checked by the tests.
    """

    name: str
    family: str
    make: Callable[..., nn.Module]
    resolution: int
    preprocess: Preprocess
    head: str
    reference: str
    paper: str
    reference_params: int | None = None
    reference_gmacs: float | None = None
    description: str = ""
    options: tuple[str, ...] = ()
    reference_kwargs: dict[str, object] = field(default_factory=dict)
    aux_heads: tuple[str, ...] = ()  # auxiliary classifiers' last layers (Inception's --aux)
    num_classes: int = 1000  # the reference's classes (ImageNet-1k unless, e.g., a CIFAR model)

    @property
    def heads(self) -> tuple[str, ...]:
        """Every classifier a new class count replaces: the head, plus auxiliary heads."""
        return (self.head, *self.aux_heads)

    @property
    def torch_reference(self) -> tuple[str, str] | None:
        """("torchvision", fn) or ("timm", name) when the reference is a torch model."""
        for prefix, library in (("torchvision.models.", "torchvision"), ("timm.", "timm")):
            if self.reference.startswith(prefix):
                return library, self.reference[len(prefix) :]
        return None


_REGISTRY: dict[str, Architecture] = {}


class UnknownArchitectureError(KeyError):
    def __init__(self, name: str) -> None:
        close = difflib.get_close_matches(name, _all().keys(), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else "; run 'graphgen list' to see them all"
        super().__init__(f"unknown architecture {name!r}{hint}")
        self.message = self.args[0]

    def __str__(self) -> str:
        return self.message


def register(*architectures: Architecture) -> None:
    for arch in architectures:
        if arch.name in _REGISTRY:
            raise ValueError(f"architecture {arch.name!r} registered twice")
        _REGISTRY[arch.name] = arch


def _all() -> dict[str, Architecture]:
    from graphgen import models  # noqa: F401  (importing the families registers them)

    return _REGISTRY


def get(name: str) -> Architecture:
    try:
        return _all()[name]
    except KeyError:
        raise UnknownArchitectureError(name) from None


def names() -> list[str]:
    return list(_all())


def architectures() -> list[Architecture]:
    return list(_all().values())
