"""The streaming writer produces the same model onnx's own serialisation does."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper

from graphgen.onnx_io import save_model
from tests.support.models import built


def test_streamed_file_equals_protobuf_serialisation(tmp_path):
    model = built("resnet18")
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
    model = built("resnet18")
    before = set(model.graph.initializers)
    save_model(model, tmp_path / "m.onnx")
    assert set(model.graph.initializers) == before


def _with_external_data(tmp_path, location: str):
    """A model whose weights live in an external file, then re-pointed at ``location``."""

    model_dir = tmp_path / "repo" / "m" / "1"
    model_dir.mkdir(parents=True)
    ir.save(built("resnet18"), model_dir / "model.onnx", external_data="weights.bin")
    proto = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(model_dir / "model.onnx"))
    return model_dir


def test_external_data_inside_the_directory_loads(tmp_path):
    from graphgen.onnx_io import load_model

    model_dir = _with_external_data(tmp_path, "weights.bin")
    model = load_model(model_dir / "model.onnx")
    assert model.graph.initializers["fc.weight"].const_value.numpy().shape == (1000, 512)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "missing"])
def test_external_data_outside_the_directory_is_refused(tmp_path, kind):
    from graphgen.onnx_io import ModelFileError, load_model

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 4096)
    location = {"dotdot": "../../../secret.bin", "absolute": str(secret), "symlink": "link.bin", "missing": "nope.bin"}[
        kind
    ]
    model_dir = _with_external_data(tmp_path, location)
    if kind == "symlink":
        (model_dir / "link.bin").symlink_to(secret)
    with pytest.raises(
        ModelFileError, match="outside the model's directory" if kind != "missing" else "missing external data"
    ):
        load_model(model_dir / "model.onnx")


@pytest.mark.parametrize("content", [b"", b"\x08\x07 not a model", b"\xff" * 100])
def test_corrupt_files_are_refused(tmp_path, content):
    from graphgen.onnx_io import ModelFileError, load_model

    (tmp_path / "bad.onnx").write_bytes(content)
    with pytest.raises(ModelFileError, match="ONNX model"):
        load_model(tmp_path / "bad.onnx")


def test_a_model_read_with_external_data_saves_self_contained(tmp_path):
    from graphgen.onnx_io import load_model

    model_dir = _with_external_data(tmp_path, "weights.bin")
    copy = save_model(load_model(model_dir / "model.onnx"), tmp_path / "elsewhere" / "copy.onnx")
    proto = onnx.load(str(copy), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    onnx.checker.check_model(proto, full_check=True)
