"""One build of each (architecture, options) per test session, shared by every module that reads it.

Tracing an architecture and drawing its random weights (VGG-16's 138 M) is a large part of the
sweeps' time, and the same default builds were made again module after module (resnet18 and
resnet50 about ten times each). ``built(name, options)`` builds once and hands out clones: a
graph of the test's own (so a test that edits it changes nobody else's), the weight tensors
shared (no test writes into a tensor: the passes replace values, as onnx_ir's functional passes do).

The cache lives as long as the test process, one pytest session (under pytest-xdist each worker is
a session of its own, with its own cache). Kept: the models used last, up to ``MAX_BYTES`` of
weights (the whole registry at its default resolution is 14 GiB; the machine has 24 GiB for
several people).
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict

import onnx_ir as ir

from graphgen.build import BuildOptions, build

MAX_BYTES = 2 * 2**30


class BuiltModels:
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._models: OrderedDict[str, tuple[ir.Model, int]] = OrderedDict()
        self.builds = self.hits = 0

    def get(self, name: str, options: BuildOptions | None = None) -> ir.Model:
        """``build(name, options)``, built once: a clone of it (own graph, shared weights)."""
        options = options or BuildOptions()
        if options.weights is not None:
            raise ValueError("built() caches random-weight builds only: a checkpoint file may change under its path")
        key = json.dumps([name, dataclasses.asdict(options)], sort_keys=True, default=str)
        if key in self._models:
            self._models.move_to_end(key)
            self.hits += 1
        else:
            model = build(name, options)
            self.builds += 1
            self._models[key] = (model, _weight_bytes(model))
            while len(self._models) > 1 and sum(size for _, size in self._models.values()) > self.max_bytes:
                self._models.popitem(last=False)
        return self._models[key][0].clone()


def _weight_bytes(model: ir.Model) -> int:
    return sum(value.const_value.nbytes for value in model.graph.initializers.values() if value.const_value is not None)


BUILT_MODELS = BuiltModels()


def built(name: str, options: BuildOptions | None = None) -> ir.Model:
    """The session's build of ``name`` with ``options`` (random weights), as a clone of its own."""
    return BUILT_MODELS.get(name, options)
