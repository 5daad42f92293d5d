"""The inference form and the conversions' results are fixed points of onnxsim and onnxslim.

Users run graph simplifiers on whatever they get; on graphgen's inference form they should find
nothing to remove or fold (issue 13). The registry-wide check of default builds lives with the
tool-acceptance tests; these are the graphs the passes make, built small (the result's structure
does not depend on the resolution).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from graphgen.build import BuildOptions
from graphgen.metadata import REPLACED
from graphgen.passes import fold_batchnorm, fold_repvgg, group_branches
from tests.support.models import built
from tests.support.passes import simplifier_changes

pytest.importorskip("onnxsim")
pytest.importorskip("onnxslim")

SMALL = BuildOptions(batch=1, resolution=64)


def _repvgg_folded():
    """graphgen convert --fold-repvgg --fold-bn of a --keep-bn build."""
    return fold_batchnorm(fold_repvgg(built("repvgg_a0", replace(SMALL, keep_bn=True))).model).model


def _resnext_grouped():
    """graphgen convert --group-branches of the default build of ResNeXt's branches form."""
    result = group_branches(built("resnext50_32x4d", replace(SMALL, variant={"form": "branches"})))
    assert result.notes == ("16 BatchNormalization(s) and constant scale(s) folded into convolutions",)  # fold's own
    return result.model


CASES = {
    "repvgg_a0 fold-repvgg fold-bn": _repvgg_folded,
    "resnext50 branches group-branches": _resnext_grouped,
    "inception_v3 (nested Concats)": lambda: built("inception_v3", replace(SMALL, resolution=75)),
    "inception_resnet_v2 (residual scales)": lambda: built("inception_resnet_v2", replace(SMALL, resolution=75)),
}


@pytest.mark.parametrize("case", CASES)
def test_simplifiers_find_nothing(case: str) -> None:
    model = CASES[case]()
    assert simplifier_changes(model) == {"onnxsim": {}, "onnxslim": {}}
    # and every node, those the passes made included, names its module and block
    assert [node.name for node in model.graph if not node.doc_string] == []
    made = [node for node in model.graph if REPLACED in node.metadata_props]
    assert made and all(f"({node.metadata_props[REPLACED]})" in node.doc_string for node in made)
    assert all(" in " in node.doc_string or "," in node.doc_string for node in made)  # "Conv in RepVggBlock …"
