"""The form of every graph graphgen writes: what ONNX tools expect to find, independent of any tool."""

from __future__ import annotations

import onnx
import pytest

from graphgen.build import BuildOptions, build, save
from graphgen.passes import fold_repvgg, group_branches, inline_functions, replace_head, to_fp16


@pytest.mark.parametrize(("name", "keep_bn"), [("repvgg_a0", True), ("resnet18", True), ("mobilenet_v2", False)])
def test_no_empty_optional_inputs(name, keep_bn, tmp_path):
    """A bias-free Conv is ``Conv(x, W)``, never ``Conv(x, W, "")`` (which stops simplifiers folding it)."""
    path = save(build(name, BuildOptions(batch=1, keep_bn=keep_bn)), tmp_path / "model.onnx")
    proto = onnx.load(str(path), load_external_data=False)
    empty = [node.name for node in proto.graph.node if "" in node.input]
    assert not empty, f"{len(empty)} nodes with an empty input, e.g. {empty[:3]}"
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    if keep_bn:  # these architectures' convolutions are all bias-free before folding
        assert convs and all(len(node.input) == 2 for node in convs)
    else:  # folded: each conv got the bias of its BatchNorm
        assert convs and all(len(node.input) == 3 for node in convs)


SMALL = {"batch": 1, "resolution": 64}
CONVERSIONS = {
    "fold-repvgg": lambda: fold_repvgg(build("repvgg_a0", BuildOptions(keep_bn=True, **SMALL))).model,
    "group-branches --keep-bn": lambda: (
        group_branches(
            build("resnext50_32x4d", BuildOptions(keep_bn=True, variant={"form": "branches"}, **SMALL))
        ).model
    ),
    "fp16": lambda: to_fp16(build("mobilenet_v2", BuildOptions(**SMALL)), keep_io_types=True).model,
    "num-classes": lambda: replace_head(build("resnet18", BuildOptions(**SMALL)), 10).model,
    "inline": lambda: inline_functions(build("resnet18", BuildOptions(functions=True, **SMALL))).model,
}


@pytest.mark.parametrize("conversion", CONVERSIONS)
def test_conversions_write_no_empty_inputs(conversion):
    model = CONVERSIONS[conversion]()
    assert [node.name for node in model.graph if None in node.inputs] == []
