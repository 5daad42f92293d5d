"""What an architecture is: its row in a family's table, its typed options, and what make() returns.

Family modules (``graphgen/models/*.py``) list their architectures as :class:`Architecture`
rows; :mod:`graphgen.registry` gathers them. This module imports nothing of graphgen's, so both
can depend on it without a cycle.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from graphgen.errors import OptionError
from graphgen.metadata import IMAGENET_MEAN, IMAGENET_STD, Preprocess

if TYPE_CHECKING:
    from graphgen.checkpoint import StateDict
    from graphgen.nn import Module

OUTPUT_NAME = "logits"
OptionValue = bool | int | float | str


@dataclass(frozen=True)
class Option:
    """One architecture option, e.g. ``Option("deploy", bool, "...")`` is the flag ``--deploy``.

    ``type`` is bool (a switch), int, float or str; ``choices`` restricts a str; ``default`` is
    what make() gets when the option is not given.
    """

    name: str
    type: type[bool] | type[int] | type[float] | type[str]
    help: str
    choices: tuple[str, ...] = ()
    default: OptionValue = False

    def __post_init__(self) -> None:
        self.check(self.default)  # a declaration whose default it would itself refuse is a bug

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def usage(self) -> str:
        """How ``graphgen list`` shows it: ``--deploy``, ``--phi FLOAT``, ``--form {grouped,branches}``."""
        if self.type is bool:
            return self.flag
        if self.choices:
            return f"{self.flag} {{{','.join(self.choices)}}}"
        return f"{self.flag} {self.type.__name__.upper()}"

    def check(self, value: object) -> OptionValue:
        """``value`` as this option's type, or :class:`OptionError` saying what it takes."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise OptionError(f"{self.flag} is a switch (true or false), got {value!r}")
            return value
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or isinstance(value, bool):
            raise OptionError(f"{self.flag} takes a {self.type.__name__}, got {value!r}")
        if self.choices and value not in self.choices:
            raise OptionError(f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionError(f"{self.flag} must be a finite number, got {value!r}")
        return value


@dataclass(frozen=True)
class Network:
    """What an architecture's ``make(num_classes, **options)`` returns.

    ``module``: the module tree to trace. ``resolution``: the input size it is built for by
    default when it is not the architecture's (compound scaling chooses its own). ``output_names``: one per output (auxiliary heads
    add some). ``metadata``: extra ``graphgen.*`` model metadata describing the variant.
    ``adapt_state_dict``: maps a reference checkpoint onto this form when their keys differ
    (ResNeXt's parallel branches, a network built without its auxiliary heads).
    """

    module: Module
    resolution: int | None = None
    output_names: tuple[str, ...] = (OUTPUT_NAME,)
    metadata: Mapping[str, str] = field(default_factory=dict)
    adapt_state_dict: Callable[[StateDict], StateDict] | None = None


class MakeNetwork(Protocol):
    """An architecture's ``make``: the number of classes, positionally, then each declared option by name.

    ``make(num_classes, deploy=True)`` for a row declaring ``Option("deploy", bool, ...)``. Its
    option parameters are exactly the options its row declares and have no defaults:
    the option's declaration holds the one default, and :meth:`Architecture.network` fills it in.
    Static typing checks the first parameter and the result; :meth:`Architecture.make_problems`
    checks the options against the declarations (for every row, in ``tests/builder``).
    """

    def __call__(self, num_classes: int, /, *args: Any, **options: Any) -> Network: ...


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """One buildable network: a row of its family's table.

    ``make(num_classes, **options)`` returns the :class:`Network`; it receives every option in
    ``options``, defaults filled in. ``head`` is the path of the final classifier, replaced when
    a different number of classes is asked for. ``reference`` is ``torchvision.models.<fn>`` or
    ``timm.<name>`` where one exists — the reference-parity tests build it with
    ``reference_kwargs`` — or prose naming the source. ``reference_params`` and
    ``reference_gmacs`` are its published figures (GMACs at the default resolution), checked by
    the tests against the built graph.
    """

    name: str
    family: str
    make: MakeNetwork
    resolution: int
    preprocess: Preprocess
    head: str
    reference: str
    paper: str
    reference_params: int | None = None
    reference_gmacs: float | None = None
    description: str = ""
    options: tuple[Option, ...] = ()
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

    def option_values(self, given: Mapping[str, object]) -> dict[str, OptionValue]:
        """Every option's value: ``given`` checked against the declarations, defaults for the rest."""
        declared = {option.name: option for option in self.options}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            takes = ", ".join(option.usage for option in self.options) or "none"
            raise OptionError(f"{self.name} does not take --{unknown[0].replace('_', '-')} (its options: {takes})")
        return {
            name: option.check(given[name]) if name in given else option.default for name, option in declared.items()
        }

    def make_problems(self) -> list[str]:
        """How ``make``'s signature departs from :class:`MakeNetwork` and the declared options (none: it fits)."""
        parameters = list(inspect.signature(self.make).parameters.values())
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if not parameters or parameters[0].kind not in positional:
            return [f"{self.name}: make takes the number of classes as its first, positional parameter"]
        problems = []
        declared = {option.name: option for option in self.options}
        named = {parameter.name: parameter for parameter in parameters[1:]}
        for parameter in parameters:
            if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                problems.append(f"{self.name}: make takes *{parameter.name}; it takes the declared options only")
            elif parameter.default is not inspect.Parameter.empty:
                problems.append(
                    f"{self.name}: make's {parameter.name} has a default; the Option's declaration holds it"
                )
        if missing := sorted(set(declared) - set(named)):
            problems.append(f"{self.name}: make does not take the declared option(s) {', '.join(missing)}")
        if undeclared := sorted(set(named) - set(declared)):
            problems.append(f"{self.name}: make takes {', '.join(undeclared)}, which the row does not declare")
        for name in sorted(set(declared) & set(named)):
            annotation, option = named[name].annotation, declared[name]
            if annotation is not inspect.Parameter.empty and annotation not in (option.type, option.type.__name__):
                problems.append(
                    f"{self.name}: make's {name} is annotated {annotation}, its option is a {option.type.__name__}"
                )
        return problems

    def network(self, num_classes: int | None = None, options: Mapping[str, object] | None = None) -> Network:
        """The module tree for ``num_classes`` (default: the reference's) and the given options."""
        return self.make(num_classes or self.num_classes, **self.option_values(options or {}))


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


def options_of(architectures: list[Architecture]) -> dict[str, Option]:
    """Every option any of ``architectures`` takes, by name; one name must mean one type and choice set."""
    found: dict[str, Option] = {}
    for arch in architectures:
        for option in arch.options:
            seen = found.setdefault(option.name, option)
            if (seen.type, seen.choices) != (option.type, option.choices):
                raise TypeError(f"option {option.flag} is declared twice with different types or choices")
    return found


__all__ = [
    "OUTPUT_NAME",
    "Architecture",
    "MakeNetwork",
    "Network",
    "Option",
    "OptionValue",
    "imagenet_eval",
    "options_of",
    "timm_eval",
]
