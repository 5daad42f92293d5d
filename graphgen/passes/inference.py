"""The inference form ``graphgen build`` writes unless ``--keep-bn``: what graph simplifiers would make of it.

Rewrite rules: those of :mod:`~graphgen.passes.fold_batchnorm` (BatchNormalization and constant
scales into the convolution before them), then :mod:`~graphgen.passes.flatten_concats` (nested
same-axis Concats into one), chained as onnx_ir chains passes. The result is a fixed point of
onnxsim and onnxslim: they find nothing to remove or fold in it.
"""

from __future__ import annotations

import onnx_ir as ir

from graphgen.passes.base import PassResult, Sequential
from graphgen.passes.flatten_concats import FlattenConcatsPass
from graphgen.passes.fold_batchnorm import FoldBatchNormPass


class InferenceFormPass(Sequential):
    """BatchNorm and constant scales folded into convolutions, nested Concats flattened.

    ``rewrites`` counts the nodes folded away; the notes are each sub-pass's, saying how many of each kind.
    """

    def __init__(self) -> None:
        super().__init__(FoldBatchNormPass(), FlattenConcatsPass())


def inference_form(model: ir.Model) -> PassResult:
    """Return the inference form of ``model`` (a copy); ``rewrites`` counts the nodes folded away."""
    return InferenceFormPass()(model)
