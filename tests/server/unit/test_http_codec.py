"""KServe v2 REST bodies ↔ the runtime's types (graphgen_server.frontends.http_codec), without a server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphgen.profiling.summary import Profile, Spread
from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_server.core.api import Inferred, OutputTensor, Timings
from graphgen_server.core.errors import InvalidArgument
from graphgen_server.core.requests import Profiling, to_array
from graphgen_server.frontends.http_codec import deserialize_bytes, infer_request, infer_response, message_json
from graphgen_server.tensors import to_bytes


def body_with_binary(document: dict, *blobs: bytes) -> tuple[bytes, str]:
    header = json.dumps(document).encode()
    return header + b"".join(blobs), str(len(header))


def test_json_and_binary_inputs_mix_and_keep_their_order():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    ids = np.array([[1, -2]], dtype=np.int64)
    document = {
        "id": "r7",
        "inputs": [
            {"name": "a", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}},
            {"name": "b", "shape": [1, 2], "datatype": "INT64", "data": [[1, -2]]},
            {"name": "c", "shape": [2], "datatype": "FP16", "parameters": {"binary_data_size": 4}},
        ],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True, "classification": 3}}, {"name": "other"}],
        "parameters": {"binary_data_output": False, "priority": 2},
    }
    half = np.array([0.5, 2.0], np.float16)
    body, length = body_with_binary(document, x.tobytes(), half.tobytes())
    call = infer_request(body, length)
    assert call.id == "r7"
    assert [(t.name, t.datatype, list(t.shape), t.field) for t in call.inputs] == [
        ("a", "FP32", [2, 3], "inputs[0]"),
        ("b", "INT64", [1, 2], "inputs[1]"),
        ("c", "FP16", [2], "inputs[2]"),
    ]
    assert [to_bytes(to_array(t)) for t in call.inputs] == [x.tobytes(), ids.tobytes(), half.tobytes()]
    assert [(o.name, o.field, o.classification) for o in call.outputs] == [
        ("logits", "outputs[0]", 3),
        ("other", "outputs[1]", None),
    ]
    assert call.profile == Profiling(False, 0, "parameters.profile_runs")  # (priority: accepted, not used)
    assert call.binary == {"logits": True, "other": False}


def test_profile_parameters_follow_the_grpc_rules():
    tensor = {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}
    asked = {"inputs": [tensor], "parameters": {"profile": True, "profile_runs": 7}}
    assert infer_request(json.dumps(asked).encode(), None).profile == Profiling(True, 7, "parameters.profile_runs")
    for parameters, field in [
        ({"profile": 1}, "parameters.profile"),
        ({"profile_runs": True}, "parameters.profile_runs"),
    ]:
        with pytest.raises(InvalidArgument) as refused:
            infer_request(json.dumps({"inputs": [tensor], "parameters": parameters}).encode(), None)
        assert str(refused.value).startswith(field)


@pytest.mark.parametrize(
    ("body", "length", "field"),
    [
        (b"[1, 2]", None, "request"),
        (b'{"inputs": []}', None, "inputs"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP8", "data": [1]}]}', None, "inputs[0].datatype"),
        (b'{"inputs": [{"name": "a", "shape": "1", "datatype": "FP32", "data": [1]}]}', None, "inputs[0].shape"),
        (b'{"inputs": [{"name": "a", "shape": [2], "datatype": "INT32", "data": [1, 2.5]}]}', None, "inputs[0].data"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32"}]}', None, "inputs[0]"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}', "1000", "Inference-Header"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}', b"xyz", "binary data"),
        (
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}',
            b"1234",
            "inputs[0].parameters.binary_data_size",
        ),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": {}}', None, "outputs"),
        (
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": {"p": null}}',
            None,
            "parameters.p",
        ),
        (
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "outputs": [{"name": "y", "parameters": {"classification": [3]}}]}',
            None,
            "outputs[0].parameters.classification",
        ),
    ],
)
def test_malformed_requests_name_the_field(body, length, field):
    if isinstance(length, bytes):  # binary data after the JSON
        body, length = body + length, str(len(body))
    with pytest.raises(InvalidArgument) as refused:
        infer_request(body, length)
    assert str(refused.value).startswith(field)


def test_response_outputs_as_json_or_binary():
    logits = np.array([[0.25, -1.0]], np.float32)
    classes = [b"0.250000:0:cat", b"-1.000000:1:dog"]
    raw_classes = b"".join(len(c).to_bytes(4, "little") + c for c in classes)
    spread = Spread(1.0, 1.0, 1.0, 1.0, 1.0)
    profile = Profile(
        rows=[], run=spread, runs=3, warmup_runs=1, batch=1, provider="CPUExecutionProvider", timing="host"
    )
    timings = Timings(0.0, 0.0, 0.0, 0.0, 0.0, 1)
    outputs = [OutputTensor("logits", "FP32", logits), OutputTensor("top", "BYTES", np.array([classes], dtype=object))]
    inferred = Inferred("m", "1", outputs, timings, profile)

    text, length = infer_response(inferred, "r", {"logits": False, "top": False})
    assert length is None
    document = json.loads(text)
    assert document["id"] == "r" and document["outputs"][0]["data"] == [0.25, -1.0]
    assert (document["model_name"], document["model_version"]) == ("m", "1")
    assert list(document["parameters"]) == ["graphgen_profile"]
    assert json.loads(document["parameters"]["graphgen_profile"])["runs"] == 3
    assert document["outputs"][1] == {
        "name": "top",
        "datatype": "BYTES",
        "shape": [1, 2],
        "data": ["0.250000:0:cat", "-1.000000:1:dog"],
    }

    body, length = infer_response(inferred, "", {"": True})  # binary_data_output: every output
    header = json.loads(body[:length])
    assert "id" not in header
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [8, len(raw_classes)]
    assert body[length : length + 8] == logits.tobytes() and deserialize_bytes(body[length + 8 :]) == classes


def test_messages_are_written_with_numbers_and_every_field():
    stats = pb.ModelStatisticsResponse()
    model = stats.model_stats.add(name="m", version="1", inference_count=12, execution_count=3)
    model.inference_stats.success.CopyFrom(pb.StatisticDuration(count=3, ns=2**40))
    model.inference_stats.fail.CopyFrom(pb.StatisticDuration())
    model.batch_stats.add(batch_size=4).compute_infer.CopyFrom(pb.StatisticDuration(count=3, ns=9))
    (written,) = message_json(stats)["model_stats"]
    assert written["inference_count"] == 12 and written["last_inference"] == 0
    assert written["inference_stats"]["success"] == {"count": 3, "ns": 2**40}
    assert written["inference_stats"]["fail"] == {"count": 0, "ns": 0}
    assert written["batch_stats"][0]["batch_size"] == 4 and written["batch_stats"][0]["compute_infer"]["ns"] == 9
