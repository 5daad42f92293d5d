"""HTTP/REST with several inputs and outputs of other datatypes (FP16, INT64 in; FP32, BOOL out), by tritonclient.http.

The model is written with onnx directly: sum = float(a) + float(b), mask = float(a) > float(b).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

from tests.support.server import ServerProcess

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("geventhttpclient") is None, reason="tritonclient[http] not installed"
)

CLIENT_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

client = thttp.InferenceServerClient(sys.argv[1])
rng = np.random.default_rng(1)
a = rng.standard_normal((3, 4)).astype(np.float16)
b = rng.integers(-3, 3, (3, 4)).astype(np.int64)
seen = {}
for binary in (False, True):
    inputs = [thttp.InferInput("a", [3, 4], "FP16"), thttp.InferInput("b", [3, 4], "INT64")]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=not binary)  # one of each, then the other way
    outputs = [thttp.InferRequestedOutput("mask", binary_data=binary), thttp.InferRequestedOutput("sum")]
    result = client.infer("two", inputs, outputs=outputs)
    total, mask = result.as_numpy("sum"), result.as_numpy("mask")
    expected = a.astype(np.float32) + b.astype(np.float32)
    seen[str(binary)] = {
        "sum": bool(total.dtype == np.float32 and np.array_equal(total, expected)),
        "mask": bool(mask.dtype == np.bool_ and np.array_equal(mask, a.astype(np.float32) > b)),
        "order": [o["name"] for o in result.get_response()["outputs"]],
    }
text = thttp.InferInput("a", [1, 4], "BYTES")
text.set_data_from_numpy(np.array([[b"x"] * 4], dtype=np.object_))
other = thttp.InferInput("b", [1, 4], "INT64")
other.set_data_from_numpy(np.zeros((1, 4), np.int64))
try:
    client.infer("two", [text, other])
    seen["bytes"] = "no error"
except InferenceServerException as error:
    seen["bytes"] = [error.status(), error.message()]
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    nodes = [
        helper.make_node("Cast", ["a"], ["af"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["af", "bf"], ["sum"]),
        helper.make_node("Greater", ["af", "bf"], ["mask"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT16, ["N", 4]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 4]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["N", 4]),
        ],
    )
    (repo / "two" / "1").mkdir(parents=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.save(model, repo / "two" / "1" / "model.onnx")
    with ServerProcess(repo) as server:
        done = subprocess.run(
            [sys.executable, "-c", CLIENT_SCRIPT, server.http_address], capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("binary", ["False", "True"])
def test_two_inputs_of_other_datatypes_json_and_binary(seen, binary):
    assert seen[binary] == {"sum": True, "mask": True, "order": ["mask", "sum"]}


def test_bytes_inputs_are_refused_with_the_reason(seen):
    status, message = seen["bytes"]
    assert status == "400" and "BYTES" in message and "inputs[0]" in message
