"""tritonclient.grpc against a hand-written Triton repository: get_model_config agrees with what is
enforced, and ModelStreamInfer (start_stream / async_stream_infer) answers 100 requests as unary
calls do, with a bad request mid-stream answered in-stream while the stream goes on.

tritonclient runs in a subprocess (its ``inference`` protos clash with graphgen's in one process).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from onnx import TensorProto, helper

from tests.support.server import ServerProcess, add_tiny_model, save_onnx_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="tritonclient not installed")

TINY_CONFIG = """
name: "tiny"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "input", data_type: TYPE_FP32, dims: [ 3, 32, 32 ] } ]
output [ { name: "logits", data_type: TYPE_FP32, dims: [ 10 ] } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
instance_group [ { count: 2, kind: KIND_CPU } ]
"""

CLIENT_SCRIPT = r"""
import json, queue, sys
import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

client = triton.InferenceServerClient(sys.argv[1])
seen = {"config": client.get_model_config("tiny", as_json=True)["config"],
        "pair_config": client.get_model_config("pair", as_json=True)["config"]}

def tensor(array, name="input"):
    t = triton.InferInput(name, list(array.shape), "FP32")
    t.set_data_from_numpy(array)
    return t

try:
    client.infer("tiny", [tensor(np.zeros((5, 3, 32, 32), np.float32))])
    seen["over_limit"] = "accepted"
except InferenceServerException as error:
    seen["over_limit"] = f"{error.status()} {error.message()}"

rng = np.random.default_rng(5)
arrays = [rng.standard_normal((1 + i % 3, 3, 32, 32), dtype=np.float32) for i in range(100)]
unary = [client.infer("tiny", [tensor(a)]).as_numpy("logits") for a in arrays]

answers = queue.Queue()
client.start_stream(callback=lambda result, error: answers.put((result, error)))
for i, array in enumerate(arrays):
    if i == 50:
        client.async_stream_infer("tiny", [tensor(np.zeros((1, 3, 16, 16), np.float32))], request_id="bad")
    client.async_stream_infer("tiny", [tensor(array)], request_id=str(i))
client.stop_stream()  # waits for every answer
streamed, errors = {}, []
while not answers.empty():
    result, error = answers.get()
    if error is not None:
        errors.append(str(error))
    else:
        streamed[result.get_response().id] = result.as_numpy("logits")
seen["streamed"] = len(streamed)
seen["equal"] = all(np.array_equal(streamed[str(i)], unary[i]) for i in range(100) if str(i) in streamed)
seen["errors"] = errors
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    (repo / "tiny" / "config.pbtxt").write_text(TINY_CONFIG)
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 3])
    total = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 3])
    nodes = [
        helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "bf"], ["sum"]),
    ]
    save_onnx_model(repo / "pair" / "1" / "model.onnx", nodes, [a, b], [total])
    with ServerProcess(repo, ["--max-images", "16"]) as server:
        done = subprocess.run(
            [sys.executable, "-c", CLIENT_SCRIPT, server.address], capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_get_model_config_says_what_is_enforced(seen):
    config = seen["config"]
    assert config["name"] == "tiny" and config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 4
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": ["3", "32", "32"]}]
    assert config["output"] == [{"name": "logits", "data_type": "TYPE_FP32", "dims": ["10"]}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "100"
    assert [(g["count"], g["kind"]) for g in config["instance_group"]] == [(2, "KIND_CPU")]
    assert seen["over_limit"].startswith("StatusCode.INVALID_ARGUMENT") and "max_batch_size 4" in seen["over_limit"]
    pair = seen["pair_config"]  # no config.pbtxt: derived from the model
    assert pair["max_batch_size"] == 16  # --max-images
    assert [(i["name"], i["data_type"], i["dims"]) for i in pair["input"]] == [
        ("a", "TYPE_FP32", ["3"]),
        ("b", "TYPE_INT64", ["3"]),
    ]


def test_a_stream_answers_as_unary_calls_and_goes_on_after_a_bad_request(seen):
    assert seen["streamed"] == 100 and seen["equal"]
    (error,) = seen["errors"]
    assert "INVALID_ARGUMENT" in error and "does not fit" in error
