"""KServe v2 HTTP/REST: tritonclient.http, unmodified, against graphgen-server, beside tritonclient.grpc.

tritonclient's protobuf stubs clash with graphgen's in one process (both define ``inference.*``),
so the clients run as a script in a subprocess and report what they saw as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.support.server import ServerProcess, add_tiny_model

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("geventhttpclient") is None, reason="tritonclient[http] not installed"
)

CLIENT_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

http_address, grpc_address = sys.argv[1], sys.argv[2]
http = thttp.InferenceServerClient(http_address)
grpc = tgrpc.InferenceServerClient(grpc_address)
seen = {
    "live": http.is_server_live(),
    "ready": http.is_server_ready(),
    "model_ready": http.is_model_ready("tiny"),
    "model_ready_v1": http.is_model_ready("tiny", "1"),
    "model_ready_v7": http.is_model_ready("tiny", "7"),  # no such version: False, as Triton answers
    "model_ready_unknown": http.is_model_ready("nope"),
    "server": http.get_server_metadata(),
    "metadata": http.get_model_metadata("tiny"),
    "metadata_v1": http.get_model_metadata("tiny", "1"),
    "index": http.get_model_repository_index(),
}
for what, call in (("unknown_model", lambda: http.get_model_metadata("nope")),
                   ("unknown_version", lambda: http.get_model_metadata("tiny", "7"))):
    try:
        call()
        seen[what] = "no error"
    except InferenceServerException as error:
        seen[what] = [error.status(), error.message()]

x = np.random.default_rng(5).standard_normal((3, 3, 32, 32), dtype=np.float32)

def http_infer(binary_in, binary_out, class_count=0, compression=None):
    tensor = thttp.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    output = thttp.InferRequestedOutput("logits", binary_data=binary_out, class_count=class_count)
    return http.infer("tiny", [tensor], outputs=[output], request_id="h1",
                      request_compression_algorithm=compression, response_compression_algorithm=compression)

def grpc_infer(class_count=0):
    tensor = tgrpc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return grpc.infer("tiny", [tensor], outputs=[tgrpc.InferRequestedOutput("logits", class_count=class_count)])

expected = grpc_infer().as_numpy("logits")
for name, (binary_in, binary_out, compression) in {
    "json": (False, False, None), "binary": (True, True, None), "binary_in_json_out": (True, False, None),
    "gzip": (True, True, "gzip"), "deflate": (False, False, "deflate"),
}.items():
    result = http_infer(binary_in, binary_out, compression=compression)
    got = result.as_numpy("logits")
    seen[name] = {"equal": bool(got.dtype == expected.dtype and np.array_equal(got, expected)),
                  "shape": list(got.shape), "response": result.get_response()}
grpc_classes = grpc_infer(class_count=3).as_numpy("logits")
for binary_out in (False, True):
    classes = http_infer(True, binary_out, class_count=3).as_numpy("logits")
    seen[f"classification_{binary_out}"] = {
        "equal": bool(np.array_equal(classes.astype(bytes), grpc_classes.astype(bytes))),
        "first": classes[0][0].decode() if isinstance(classes[0][0], bytes) else str(classes[0][0]),
    }
profiled_input = thttp.InferInput("input", list(x.shape), "FP32")
profiled_input.set_data_from_numpy(x)
profiled = http.infer("tiny", [profiled_input], parameters={"profile": True})
seen["profile"] = json.loads(profiled.get_response()["parameters"]["graphgen_profile"])
try:
    bad = thttp.InferInput("input", [1, 3, 31, 32], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3, 31, 32), np.float32))
    http.infer("tiny", [bad])
    seen["bad_shape"] = "no error"
except InferenceServerException as error:
    seen["bad_shape"] = [error.status(), error.message()]
seen["config_http"] = http.get_model_config("tiny")
seen["config_http_v1"] = http.get_model_config("tiny", "1")
seen["config_grpc"] = grpc.get_model_config("tiny", as_json=True)["config"]
seen["http_stats"] = http.get_inference_statistics("tiny")
seen["all_stats"] = http.get_inference_statistics()
seen["grpc_stats"] = grpc.get_inference_statistics("tiny", as_json=True)
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    with ServerProcess(repo) as process:
        yield process


@pytest.fixture(scope="module")
def seen(server):
    done = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT, server.http_address, server.address],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def http_call(server, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://{server.http_address}{path}", data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    return status, json.loads(text) if text else {}


def test_health_and_metadata(seen):
    assert seen["live"] and seen["ready"] and seen["model_ready"] and seen["model_ready_v1"]
    assert seen["server"]["name"] == "graphgen" and "classification" in seen["server"]["extensions"]
    metadata = seen["metadata"]
    assert metadata == seen["metadata_v1"]
    assert metadata["name"] == "tiny" and metadata["versions"] == ["1"] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert metadata["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert [(m["name"], m["version"], m["state"]) for m in seen["index"]] == [("tiny", "1", "READY")]


def _plain(value):
    """JSON of a message without default values, 64-bit integers as numbers (tritonclient.grpc's JSON
    leaves defaults out and writes them as strings; Triton's REST API writes every field, as numbers)."""
    if isinstance(value, dict):
        plain = {k: _plain(v) for k, v in value.items()}
        return {k: v for k, v in plain.items() if v not in (0, "", [], {}, False)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value


def test_model_config_agrees_with_grpc_and_with_the_model(seen):
    config = seen["config_http"]
    assert config == seen["config_http_v1"]
    assert _plain(config) == _plain(seen["config_grpc"])
    assert config["name"] == "tiny" and config["platform"] == "onnxruntime_onnx"
    (tensor,) = config["input"]
    assert tensor["name"] == "input" and tensor["data_type"] == "TYPE_FP32"
    assert [*([-1] if config["max_batch_size"] else []), *tensor["dims"]] == [-1, 3, 32, 32]


def test_is_model_ready_of_a_missing_model_or_version_is_false(seen):
    assert seen["model_ready"] and seen["model_ready_v1"]
    assert seen["model_ready_v7"] is False and seen["model_ready_unknown"] is False


def test_unknown_model_and_version_are_404_with_a_message(seen):
    status, message = seen["unknown_model"]
    assert status == "404" and "'nope' is not in the repository" in message
    status, message = seen["unknown_version"]
    assert status == "404" and "no version '7'" in message


@pytest.mark.parametrize("variant", ["json", "binary", "binary_in_json_out", "gzip", "deflate"])
def test_infer_equals_grpc(seen, variant):
    answer = seen[variant]
    assert answer["equal"] and answer["shape"] == [3, 10]
    response = answer["response"]
    assert response["model_name"] == "tiny" and response["model_version"] == "1" and response["id"] == "h1"
    binary_out = variant in ("binary", "gzip")
    assert ("parameters" in response["outputs"][0]) == binary_out  # binary_data_size, else JSON data


@pytest.mark.parametrize("binary_out", [False, True])
def test_classification_extension_equals_grpc(seen, binary_out):
    answer = seen[f"classification_{binary_out}"]
    assert answer["equal"]
    value, index, label = answer["first"].split(":")
    assert float(value) and 0 <= int(index) < 10 and label


def test_a_profile_comes_back_as_a_response_parameter(seen):
    layers = seen["profile"]["layers"]
    assert layers and any(row["layer"].startswith("_blocks.") for row in layers)


def test_a_bad_request_is_400_naming_the_field(seen):
    status, message = seen["bad_shape"]
    assert status == "400" and "inputs[0]" in message and "[N, 3, 32, 32]" in message


def test_statistics_agree_with_grpc(seen):
    (http_stats,) = seen["http_stats"]["model_stats"]
    (grpc_stats,) = seen["grpc_stats"]["model_stats"]
    assert seen["all_stats"]["model_stats"][0]["name"] == "tiny"
    # 2 gRPC + 5 HTTP tensor calls + 2 HTTP classification calls + 1 profiled; 1 failed; each of 3 rows.
    succeeded = http_stats["inference_stats"]["success"]["count"]
    assert succeeded == 10 == int(grpc_stats["inference_stats"]["success"]["count"])
    assert http_stats["inference_stats"]["fail"]["count"] == 1
    assert http_stats["inference_count"] == 30 and http_stats["inference_stats"]["compute_infer"]["ns"] > 0


def test_malformed_bodies_are_400_with_a_message(server):
    status, answer = http_call(server, "/v2/models/tiny/infer", b"{not json")
    assert status == 400 and answer["error"].startswith("request: not valid JSON")
    status, answer = http_call(server, "/v2/models/tiny/infer", b'{"inputs": [{"name": "input"}]}')
    assert status == 400 and "inputs[0]" in answer["error"]
    status, answer = http_call(
        server, "/v2/models/tiny/infer", b'{"inputs": []}', {"Inference-Header-Content-Length": "99"}
    )
    assert status == 400 and "Inference-Header-Content-Length" in answer["error"]
    status, answer = http_call(server, "/v2/nothing/here")
    assert status == 404 and answer["error"]


def test_the_token_guards_every_endpoint_but_health_and_metrics(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    token = tmp_path_factory.mktemp("secret") / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o600)
    with ServerProcess(repo, ["--token-file", str(token)]) as server:
        assert http_call(server, "/v2/health/ready")[0] == 200
        status, answer = http_call(server, "/v2/models/tiny")
        assert status == 401 and "no bearer token" in answer["error"]
        assert http_call(server, "/v2/models/tiny", headers={"Authorization": "Bearer wrong"})[0] == 401
        status, answer = http_call(server, "/v2/models/tiny", headers={"Authorization": "Bearer s3cret-token"})
        assert status == 200 and answer["name"] == "tiny"
        with urllib.request.urlopen(server.metrics_url, timeout=30) as response:  # open, as Triton's and probes
            assert b"nv_inference_request_success" in response.read()
