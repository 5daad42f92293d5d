"""Every KServe datatype onnxruntime takes, several inputs and outputs, named outputs — through ModelInfer.

The models are written with onnx directly: one with an input and an output of each of the twelve
datatypes (Identity), an fp16-IO model, a two-input model, and one with a string input (refused at
load: BYTES is not served). The real runtime and servicers run in-process.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper

from graphgen_protos import kserve_v2_pb2 as kpb
from graphgen_server.core.errors import InvalidArgument
from graphgen_server.core.requests import to_array
from graphgen_server.tensors import DATATYPES, InputTensor
from tests.support.server import Aborted, FakeContext, InProcessServer, as_sent, save_onnx_model

ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
}
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _value(name: str, datatype: str, shape: list) -> object:
    return helper.make_tensor_value_info(name, ONNX_TYPES[datatype], shape)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    save_onnx_model(
        repo / "every" / "1" / "model.onnx",
        [helper.make_node("Identity", [f"in_{t}"], [f"out_{t}"]) for t in ONNX_TYPES],
        [_value(f"in_{t}", t, ["N", 2]) for t in ONNX_TYPES],
        [_value(f"out_{t}", t, ["N", 2]) for t in ONNX_TYPES],
    )
    typed = [t for t in ONNX_TYPES if t != "FP16"]
    save_onnx_model(
        repo / "typed" / "1" / "model.onnx",
        [helper.make_node("Identity", [f"in_{t}"], [f"out_{t}"]) for t in typed],
        [_value(f"in_{t}", t, ["N", 2]) for t in typed],
        [_value(f"out_{t}", t, ["N", 2]) for t in typed],
    )
    save_onnx_model(
        repo / "half" / "1" / "model.onnx",
        [helper.make_node("Add", ["x", "x"], ["double"]), helper.make_node("Relu", ["x"], ["relu"])],
        [_value("x", "FP16", ["N", 3, 4])],
        [_value("double", "FP16", ["N", 3, 4]), _value("relu", "FP16", ["N", 3, 4])],
    )
    save_onnx_model(
        repo / "pair" / "1" / "model.onnx",
        [
            helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["a", "b_float"], ["sum"]),
            helper.make_node("Add", ["b", "b"], ["twice_b"]),
        ],
        [_value("a", "FP32", ["N", 3]), _value("b", "INT64", ["N", 3])],
        [_value("sum", "FP32", ["N", 3]), _value("twice_b", "INT64", ["N", 3])],
    )
    text = helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])
    save_onnx_model(
        repo / "strings" / "1" / "model.onnx",
        [helper.make_node("Identity", ["text"], ["echo"])],
        [text],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["N"])],
    )
    server = InProcessServer(repo, max_batch=8, batching_mode="on")
    yield server
    server.close()


def _request(model: str, arrays: dict[str, np.ndarray], *, typed: bool = False, outputs=()) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name=model)
    for name, array in arrays.items():
        datatype = next(t for t, d in DATATYPES.items() if d == array.dtype)
        tensor = request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        if typed:
            getattr(tensor.contents, CONTENTS[datatype]).extend(array.ravel().tolist())
        else:
            request.raw_input_contents.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    return request


def _outputs(response: kpb.ModelInferResponse) -> dict[str, np.ndarray]:
    return {
        o.name: np.frombuffer(raw, DATATYPES[o.datatype].newbyteorder("<")).reshape(o.shape)
        for o, raw in zip(response.outputs, response.raw_output_contents)
    }


def _every_type_inputs(rows: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    arrays = {}
    for datatype, dtype in DATATYPES.items():
        if dtype.kind == "b":
            values = rng.integers(0, 2, (rows, 2)).astype(bool)
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            values = np.array([[info.min, info.max]] * rows, dtype)  # the extremes survive the trip
        else:
            values = rng.standard_normal((rows, 2)).astype(dtype)
        arrays[f"in_{datatype}"] = values
    return arrays


def test_every_datatype_goes_in_and_comes_back_unchanged(served):
    arrays = _every_type_inputs()
    response = served.call("k", "ModelInfer", _request("every", arrays))
    got = _outputs(response)
    assert [o.datatype for o in response.outputs] == list(DATATYPES)
    for datatype in DATATYPES:
        np.testing.assert_array_equal(got[f"out_{datatype}"], arrays[f"in_{datatype}"])
        assert got[f"out_{datatype}"].dtype == DATATYPES[datatype]


def test_typed_contents_carry_every_datatype_that_has_a_field(served):
    arrays = {k: v for k, v in _every_type_inputs().items() if k != "in_FP16"}
    response = served.call("k", "ModelInfer", _request("typed", arrays, typed=True))
    got = _outputs(response)
    for name, array in arrays.items():
        np.testing.assert_array_equal(got[name.replace("in_", "out_")], array)
    # FP16 has no typed field: its values travel as raw bytes only, and a request without them says so.
    request = _request("every", arrays, typed=True)
    request.inputs.add(name="in_FP16", datatype="FP16", shape=[2, 2])
    with pytest.raises(Aborted) as refused:
        served.call("k", "ModelInfer", request)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[11].contents: FP16 has no typed contents field" in refused.value.details


def test_named_outputs_come_back_in_the_order_asked(served):
    arrays = _every_type_inputs(rows=3)
    response = served.call("k", "ModelInfer", _request("every", arrays, outputs=["out_UINT64", "out_BOOL"]))
    assert [o.name for o in response.outputs] == ["out_UINT64", "out_BOOL"]
    got = _outputs(response)
    np.testing.assert_array_equal(got["out_BOOL"], arrays["in_BOOL"])
    np.testing.assert_array_equal(got["out_UINT64"], arrays["in_UINT64"])


def test_an_fp16_model_serves_fp16(served):
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float16)
    response = served.call("k", "ModelInfer", _request("half", {"x": x}))
    got = _outputs(response)
    assert [o.datatype for o in response.outputs] == ["FP16", "FP16"]
    np.testing.assert_array_equal(got["double"], x + x)
    np.testing.assert_array_equal(got["relu"], np.maximum(x, 0))
    metadata = served.call("k", "ModelMetadata", kpb.ModelMetadataRequest(name="half"))
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("x", "FP16", [-1, 3, 4])]
    with pytest.raises(Aborted) as wrong:  # FP32 sent to an FP16 input: named, not converted
        served.call("k", "ModelInfer", _request("half", {"x": x.astype(np.float32)}))
    assert "inputs[0].datatype: model half's input 'x' takes FP16, got 'FP32'" in wrong.value.details


def test_a_two_input_model_takes_its_inputs_in_any_order_and_batches(served):
    rng = np.random.default_rng(2)
    requests = [
        (rng.standard_normal((rows, 3)).astype(np.float32), rng.integers(-9, 9, (rows, 3)).astype(np.int64))
        for rows in (1, 2, 3, 1, 2)
    ]

    async def concurrently():
        servicer = served.servicers["k"]
        calls = [
            servicer.ModelInfer(_request("pair", {"b": b, "a": a} if i % 2 else {"a": a, "b": b}), FakeContext())
            for i, (a, b) in enumerate(requests)
        ]
        return await asyncio.gather(*calls)

    for (a, b), response in zip(requests, served.run(concurrently())):
        got = _outputs(as_sent("ModelInfer", response))
        np.testing.assert_array_equal(got["sum"], a + b.astype(np.float32))
        np.testing.assert_array_equal(got["twice_b"], b + b)
    pair = served.runtime.find("pair")
    assert pair.batcher is not None and pair.stats.snapshot().inference_count == 9


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"a": np.zeros((1, 3), np.float32)}, "inputs: model pair takes 2 inputs (a, b), got 1"),
        (
            {"a": np.zeros((1, 3), np.float32), "c": np.zeros((1, 3), np.int64)},
            "inputs[1].name: model pair has inputs ['a', 'b'], not 'c'",
        ),
        (
            {"a": np.zeros((2, 3), np.float32), "b": np.zeros((1, 3), np.int64)},
            "inputs: every input must have the same batch size",
        ),
        (
            {"a": np.zeros((1, 3), np.float32), "b": np.zeros((1, 3), np.int32)},
            "inputs[1].datatype: model pair's input 'b' takes INT64, got 'INT32'",
        ),
        (
            {"a": np.zeros((1, 4), np.float32), "b": np.zeros((1, 3), np.int64)},
            "inputs[0].shape: shape [1, 4] does not fit [N, 3] (axis 1)",
        ),
    ],
    ids=["missing", "unknown name", "batch sizes differ", "datatype", "shape"],
)
def test_two_input_mistakes_name_the_input(served, arrays, words):
    with pytest.raises(Aborted) as refused:
        served.call("k", "ModelInfer", _request("pair", arrays))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in refused.value.details


@pytest.mark.parametrize(
    ("values", "datatype", "words"),
    [
        ([300, 1], "UINT8", "values do not fit UINT8"),
        ([1, 70000], "UINT16", "values do not fit UINT16"),
        ([-129, 0], "INT8", "values do not fit INT8"),
    ],
)
def test_typed_values_that_do_not_fit_the_datatype_are_refused(served, values, datatype, words):
    request = kpb.ModelInferRequest(model_name="typed")
    for t, field in CONTENTS.items():
        tensor = request.inputs.add(name=f"in_{t}", datatype=t, shape=[1, 2])
        getattr(tensor.contents, field).extend(values if t == datatype else [0, 0] if t != "BOOL" else [False] * 2)
    with pytest.raises(Aborted) as refused:
        served.call("k", "ModelInfer", request)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in refused.value.details


def test_bytes_is_refused_with_a_clear_message(served):
    strings = served.runtime.find("strings")
    assert not strings.ready and "BYTES (string) tensors are not served" in strings.reason
    request = kpb.ModelInferRequest(model_name="half")
    request.inputs.add(name="x", datatype="BYTES", shape=[1, 3, 4])
    request.raw_input_contents.append(b"")
    with pytest.raises(Aborted) as refused:
        served.call("k", "ModelInfer", request)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "takes FP16, got 'BYTES'" in refused.value.details


@pytest.mark.parametrize(
    ("values", "datatype", "fits"),
    [
        ([0, 2**64 - 1], "UINT64", True),
        ([-1, 1], "UINT64", False),
        ([1.5, 2.0], "INT64", False),
        ([2**63, 0], "INT64", False),
        ([1.0, 2.5], "FP16", True),
        ([True, False], "BOOL", True),
        ([2, 0], "BOOL", False),
        (["1", "2"], "INT32", False),
    ],
)
def test_values_from_json_are_converted_only_where_they_fit(values, datatype, fits):
    """Values as an HTTP/JSON body gives them (a list of Python numbers): exact or refused, never rounded."""
    tensor = InputTensor("x", datatype, (2,), values, "inputs[0]", "inputs[0].data")
    if fits:
        np.testing.assert_array_equal(to_array(tensor), np.array(values, dtype=object).astype(DATATYPES[datatype]))
    else:
        with pytest.raises(InvalidArgument, match=rf"inputs\[0\].data: values do not fit {datatype}"):
            to_array(tensor)
