"""The architecture registry: every buildable network, gathered from the families' tables.

Each family module (``graphgen/models/*.py``) lists its rows in ``ARCHITECTURES``;
``graphgen.models.FAMILIES`` names the family modules. The registry reads them on first use.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools

from graphgen.architecture import Architecture, Option, options_of
from graphgen.errors import GraphgenError, UserError


class UnknownArchitectureError(GraphgenError, KeyError):
    def __init__(self, name: str) -> None:
        close = difflib.get_close_matches(name, names(), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else "; run 'graphgen list' to see them all"
        super().__init__(f"unknown architecture {name!r}{hint}")
        self.message = self.args[0]

    def __str__(self) -> str:
        return self.message


@functools.cache
def _all() -> dict[str, Architecture]:
    from graphgen.models import FAMILIES  # the families import the network code (onnxscript): on first use

    table: dict[str, Architecture] = {}
    for family in FAMILIES:
        for arch in family.ARCHITECTURES:
            if arch.name in table:
                raise ValueError(f"architecture {arch.name!r} is listed twice")
            table[arch.name] = arch
    return table


def get(name: str) -> Architecture:
    try:
        return _all()[name]
    except KeyError:
        raise UnknownArchitectureError(name) from None


def names() -> list[str]:
    return list(_all())


def architectures() -> list[Architecture]:
    return list(_all().values())


def all_options() -> dict[str, Option]:
    """Every architecture option by name (the command line makes one flag of each)."""
    return options_of(architectures())


def expand(patterns: list[str]) -> list[str]:
    """Registered names matching each pattern, in registry order per pattern, without repeats.

    Patterns are shell-style (``'efficientnet_b?'``); a pattern ending in .onnx is a model file and
    stays as it is.
    """
    found: list[str] = []
    known = names()
    for pattern in patterns:
        if pattern.lower().endswith(".onnx"):
            found.append(pattern)
            continue
        matches = fnmatch.filter(known, pattern) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise UserError(f"no architecture matches {pattern!r}")
        for name in matches:
            get(name)  # an unknown plain name fails here, with "did you mean"
            if name not in found:
                found.append(name)
    return found
