"""Graph conversions on ONNX models, as onnx_ir functional passes: model -> new model, the input untouched.

Each pass is a class (``FoldBatchNormPass()`` …) that ``onnx_ir.passes.Sequential`` can chain, and
a function of the same rewrite (``fold_batchnorm(model)``) for a single call. Both return a
:class:`PassResult`: onnx_ir's result plus the number of blocks rewritten and notes for the user;
:class:`Sequential` chains passes as onnx_ir's does, keeping every pass's rewrites and notes.
"""

from __future__ import annotations

from graphgen.passes.base import GraphPass, PassResult, Sequential
from graphgen.passes.flatten_concats import FlattenConcatsPass, flatten_concats
from graphgen.passes.fold_batchnorm import FoldBatchNormPass, fold_batchnorm
from graphgen.passes.fold_repvgg import FoldRepVGGPass, fold_repvgg
from graphgen.passes.group_branches import GroupBranchesPass, group_branches
from graphgen.passes.inference import InferenceFormPass, inference_form
from graphgen.passes.inline import InlineFunctionsPass, inline_functions
from graphgen.passes.opset import ConvertOpsetPass, OpsetError, convert_opset
from graphgen.passes.outline import OutlineBlocksPass, outline_blocks
from graphgen.passes.replace_head import CutHeadPass, HeadError, ReplaceHeadPass, cut_head, replace_head
from graphgen.passes.to_fp16 import ToFp16Pass, to_fp16

__all__ = [
    "ConvertOpsetPass",
    "CutHeadPass",
    "FlattenConcatsPass",
    "FoldBatchNormPass",
    "FoldRepVGGPass",
    "GraphPass",
    "GroupBranchesPass",
    "HeadError",
    "InferenceFormPass",
    "InlineFunctionsPass",
    "OpsetError",
    "OutlineBlocksPass",
    "PassResult",
    "ReplaceHeadPass",
    "Sequential",
    "ToFp16Pass",
    "convert_opset",
    "cut_head",
    "flatten_concats",
    "fold_batchnorm",
    "fold_repvgg",
    "group_branches",
    "inference_form",
    "inline_functions",
    "outline_blocks",
    "replace_head",
    "to_fp16",
]
