"""Graph conversions on ONNX models: each a function model -> new model that never mutates its input."""

from __future__ import annotations

from graphgen.passes.base import PassResult
from graphgen.passes.fold_batchnorm import fold_batchnorm
from graphgen.passes.fold_repvgg import fold_repvgg
from graphgen.passes.group_branches import group_branches
from graphgen.passes.replace_head import HeadError, cut_head, replace_head
from graphgen.passes.to_fp16 import to_fp16

__all__ = [
    "HeadError",
    "PassResult",
    "cut_head",
    "fold_batchnorm",
    "fold_repvgg",
    "group_branches",
    "replace_head",
    "to_fp16",
]
