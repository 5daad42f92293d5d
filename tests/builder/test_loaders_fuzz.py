"""Fuzzed files: every loader either reads a mutated file or refuses it with its own clear error.

Valid .pth (zip and legacy), .safetensors, .npz and .onnx files are truncated, bit-flipped,
overwritten and extended by hypothesis; the loader must return data or raise CheckpointError /
ModelFileError — never another exception, never a hang. The CLI turns those errors into a
message and exit 2.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphgen.checkpoint import CheckpointError, load_checkpoint
from graphgen.cli import main
from graphgen.onnx_io import ModelFileError, load_model

torch = pytest.importorskip("torch")
EXAMPLES = 150


def _state():
    generator = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(8, 3, 3, 3, generator=generator), "bn.num_batches_tracked": torch.tensor(3)}


def _pth(zip_format: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save(_state(), buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


def _safetensors() -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in _state().items()})


def _npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v.numpy() for k, v in _state().items()})
    return buffer.getvalue()


SEEDS = {".pth": _pth(True), ".legacy.pth": _pth(False), ".safetensors": _safetensors(), ".npz": _npz()}


@st.composite
def mutations(draw, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "append"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "truncate":
            del data[position:]
        elif kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[position : position + len(chunk)] = chunk
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        else:
            data += draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


@pytest.mark.parametrize("suffix", list(SEEDS))
def test_mutated_checkpoints_load_or_fail_clearly(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=mutations(SEEDS[suffix]))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        try:
            state = load_checkpoint(path)
        except CheckpointError as error:
            assert str(path) in str(error)
        else:
            assert all(isinstance(v, np.ndarray) for v in state.values())

    check()


@pytest.fixture(scope="module")
def onnx_seed() -> bytes:
    """A small but complete model: the structure is what gets fuzzed, not megabytes of weights."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["h"], name="relu"), helper.make_node("Add", ["h", "b"], ["y"], name="add")],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.numpy_helper.from_array(np.arange(4, dtype=np.float32), "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10).SerializeToString()


def test_mutated_onnx_files_load_or_fail_clearly(tmp_path, onnx_seed):
    path = tmp_path / "m.onnx"

    @settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=mutations(onnx_seed))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        try:
            load_model(path)
        except ModelFileError as error:
            assert str(path) in str(error)

    check()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".npz"])
def test_cli_reports_corrupt_checkpoints_with_exit_2(tmp_path, capsys, suffix):
    path = Path(tmp_path / f"w{suffix}")
    path.write_bytes(SEEDS[suffix][: len(SEEDS[suffix]) // 3])
    assert main(["build", "resnet18", "-o", str(tmp_path / "m.onnx"), "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graphgen: error:") and str(path) in err


def test_zip_without_a_pickle_is_not_a_checkpoint(tmp_path):
    with zipfile.ZipFile(tmp_path / "w.pth", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match=r"data\.pkl"):
        load_checkpoint(tmp_path / "w.pth")
