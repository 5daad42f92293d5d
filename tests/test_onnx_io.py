"""The streaming writer produces the same model onnx's own serialisation does."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from graphgen.build import build
from graphgen.onnx_io import save_model


def test_streamed_file_equals_protobuf_serialisation(tmp_path):
    model = build("resnet18")
    save_model(model, tmp_path / "streamed.onnx")
    ir.save(model, tmp_path / "reference.onnx")
    streamed, reference = onnx.load(str(tmp_path / "streamed.onnx")), onnx.load(str(tmp_path / "reference.onnx"))
    onnx.checker.check_model(streamed, full_check=True)
    as_arrays = lambda m: {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}  # noqa: E731
    a, b = as_arrays(streamed), as_arrays(reference)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert [n.name for n in streamed.graph.node] == [n.name for n in reference.graph.node]
    assert streamed.graph.node == reference.graph.node
    assert streamed.metadata_props == reference.metadata_props
    assert streamed.ir_version == 10


def test_saving_leaves_the_model_untouched(tmp_path):
    model = build("resnet18")
    before = set(model.graph.initializers)
    save_model(model, tmp_path / "m.onnx")
    assert set(model.graph.initializers) == before
