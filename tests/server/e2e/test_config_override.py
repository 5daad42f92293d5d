"""RepositoryModelLoad with a ``config`` (what Model Analyzer sends in remote mode), over both protocols.

tritonclient's ``load_model(name, config=JSON)``: the model is loaded with that configuration
instead of config.pbtxt (ModelConfig answers it, the log says it), until a load without one reads
config.pbtxt again; a bad configuration is refused naming ``parameters.config`` and what is wrong,
while the model goes on serving as it was; uploaded files (``file:``) stay refused.

tritonclient's stubs and graphgen's define the same protobuf names (``inference.*``), which cannot
live in one process: the client side runs as a script in a subprocess and reports what it saw.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.support.server import ServerProcess, add_tiny_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="tritonclient not installed")

CLIENT_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

grpc_client = grpcclient.InferenceServerClient(sys.argv[1])
http_client = httpclient.InferenceServerClient(sys.argv[2])


def instances():
    config = grpc_client.get_model_config("tiny", as_json=True)["config"]
    return [group["count"] for group in config["instance_group"]]


def infer():
    inputs = [grpcclient.InferInput("input", [1, 3, 32, 32], "FP32")]
    inputs[0].set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    return list(grpc_client.infer("tiny", inputs).as_numpy("logits").shape)


seen = {"default": instances()}
base = grpc_client.get_model_config("tiny", as_json=True)["config"]
# Model Analyzer's way: the configuration the server answers, changed, sent back as JSON.
grpc_client.load_model("tiny", config=json.dumps({**base, "instance_group": [{"count": 3, "kind": "KIND_CPU"}]}))
seen["after_grpc"], seen["answer"] = instances(), infer()
http_client.load_model("tiny", config=json.dumps({**base, "instance_group": [{"count": 1, "kind": "kind_cpu"}]}))
seen["after_http"] = instances()
grpc_client.load_model("tiny")  # no configuration sent: config.pbtxt (none here) again
seen["after_plain"] = instances()
seen["refused"] = []
for client in (grpc_client, http_client):
    for kwargs in ({"config": '{"max_batch_sise": 4}'}, {"config": "{"}, {"files": {"file:1/model.onnx": b"x"}}):
        try:
            client.load_model("tiny", **kwargs)
            seen["refused"].append(None)
        except InferenceServerException as error:
            seen["refused"].append([str(error.status()), error.message()])
seen["ready_after"] = grpc_client.is_model_ready("tiny") and http_client.is_model_ready("tiny")
seen["answer_after"], seen["instances_after"] = infer(), instances()
print(json.dumps(seen))
"""


def test_load_with_a_configuration_over_grpc_and_http(tmp_path):
    add_tiny_model(tmp_path)
    # One process: the instance counts answered are the configuration's own (with N front-end
    # processes a count below N runs, and is answered, as one instance per front-end: test_frontends).
    with ServerProcess(tmp_path, ["--model-control", "--frontends", "1"]) as server:
        done = subprocess.run(
            [sys.executable, "-c", CLIENT_SCRIPT, server.address, server.http_address],
            capture_output=True,
            text=True,
            timeout=300,
        )
        log = server.log
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["default"] == [2]  # no config.pbtxt: Triton's default on CPU
    assert (seen["after_grpc"], seen["after_http"], seen["after_plain"]) == ([3], [1], [2])
    assert seen["answer"] == [1, 10]
    assert log.count("RepositoryModelLoad sends its configuration, used instead of config.pbtxt") == 2
    assert "instance_group { count: 3 kind: KIND_CPU }" in log
    assert "the configuration sent with RepositoryModelLoad sets no dynamic_batching" in log  # the load line
    refused = seen["refused"]
    for status, message in refused[:2] + refused[3:5]:  # the configurations, over gRPC then HTTP
        assert status in {"StatusCode.INVALID_ARGUMENT", "400"}, (status, message)
        assert message.startswith("parameters.config:"), message
    assert "did you mean 'max_batch_size'?" in refused[0][1] and "is not JSON" in refused[1][1]
    for status, message in (refused[2], refused[5]):  # the uploaded files
        assert status in {"StatusCode.INVALID_ARGUMENT", "400"} and "uploaded model files are refused" in message
    # Nothing changed by the refusals: the model serves as the last load left it.
    assert seen["ready_after"] and seen["answer_after"] == [1, 10] and seen["instances_after"] == [2]
