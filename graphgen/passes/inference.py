"""The inference form ``graphgen build`` writes unless ``--keep-bn``: what graph simplifiers would make of it.

Rewrite rules: those of :mod:`~graphgen.passes.fold_batchnorm` (BatchNormalization and constant
scales into the convolution before them), then :mod:`~graphgen.passes.flatten_concats` (nested
same-axis Concats into one). Both run on one copy of the model. The result is a fixed point of
onnxsim and onnxslim: they find nothing to remove or fold in it.
"""

from __future__ import annotations

import onnx_ir as ir

from graphgen.passes.base import GraphPass, PassResult
from graphgen.passes.flatten_concats import FlattenConcatsPass
from graphgen.passes.fold_batchnorm import FoldBatchNormPass


class InferenceFormPass(GraphPass):
    """BatchNorm and constant scales folded into convolutions, nested Concats flattened.

    ``rewrites`` counts the nodes folded away; the notes say how many of each kind.
    """

    def rewrite(self, model: ir.Model) -> int:
        folded = FoldBatchNormPass().rewrite(model)
        flattened = FlattenConcatsPass().rewrite(model)
        if folded:
            self.note(f"{folded} BatchNormalization(s) and constant scale(s) folded into convolutions")
        if flattened:
            self.note(f"{flattened} nested Concat(s) flattened into the Concat reading them")
        return folded + flattened


def inference_form(model: ir.Model) -> PassResult:
    """Return the inference form of ``model`` (a copy); ``rewrites`` counts the nodes folded away."""
    return InferenceFormPass()(model)
