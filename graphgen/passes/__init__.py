"""Graph conversions on ONNX models: each a function model -> new model that never mutates its input."""

from __future__ import annotations

from graphgen.passes.base import PassResult
from graphgen.passes.fold_batchnorm import fold_batchnorm
from graphgen.passes.fold_repvgg import fold_repvgg
from graphgen.passes.group_branches import group_branches

__all__ = ["PassResult", "fold_batchnorm", "fold_repvgg", "group_branches"]
