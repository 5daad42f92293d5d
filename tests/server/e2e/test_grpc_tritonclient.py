"""tritonclient.grpc, unmodified, against graphgen-server.

tritonclient's stubs and graphgen's define the same protobuf names (``inference.*``), which
cannot live in one process, so the client side runs as a script in a subprocess and reports
what it saw as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.support.server import ServerProcess, add_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="tritonclient not installed")

SIZE = 64

CLIENT_SCRIPT = r"""
import json, sys
import numpy as np
import onnxruntime as ort
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

address, model_path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = triton.InferenceServerClient(address)
seen = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready("lite"),
    "model_ready_v1": client.is_model_ready("lite", "1"),
    "model_ready_v2": client.is_model_ready("lite", "2"),  # no such version: False, as Triton answers
    "model_ready_unknown": client.is_model_ready("nope"),
    "server": client.get_server_metadata(as_json=True),
    "metadata": client.get_model_metadata("lite", as_json=True),
    "index": client.get_model_repository_index(as_json=True),
}
try:
    client.get_model_metadata("nope")
    seen["unknown_model"] = "no error"
except InferenceServerException as error:
    seen["unknown_model"] = error.status()

x = np.random.default_rng(3).standard_normal((3, 3, size, size), dtype=np.float32)
options = ort.SessionOptions()
options.log_severity_level = 3
expected = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]

tensor = triton.InferInput("input", list(x.shape), "FP32")
tensor.set_data_from_numpy(x)
result = client.infer("lite", [tensor], outputs=[triton.InferRequestedOutput("logits")], request_id="r1")
logits = result.as_numpy("logits")
seen["logits_equal"] = bool(logits.shape == expected.shape and np.array_equal(logits, expected))
seen["logits_max_diff"] = float(np.max(np.abs(logits - expected)))
seen["response"] = result.get_response(as_json=True)

classified = client.infer("lite", [tensor], outputs=[triton.InferRequestedOutput("logits", class_count=3)])
entries = classified.as_numpy("logits")
seen["classification_shape"] = list(entries.shape)
seen["classification"] = [[e.decode() for e in row] for row in entries]
seen["expected_top3"] = [[int(i) for i in np.argsort(-row, kind="stable")[:3]] for row in expected]
seen["expected_values"] = [[float(row[i]) for i in np.argsort(-row, kind="stable")[:3]] for row in expected]
seen["statistics"] = client.get_inference_statistics("lite", as_json=True)
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    path = add_model(repo, "efficientnet_lite0", name="lite", resolution=SIZE)  # 1000 ImageNet classes
    with ServerProcess(repo) as server:
        done = subprocess.run(
            [sys.executable, "-c", CLIENT_SCRIPT, server.address, str(path), str(SIZE)],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_health_and_metadata(served):
    assert served["live"] and served["ready"] and served["model_ready"] and served["model_ready_v1"]
    assert served["model_ready_v2"] is False and served["model_ready_unknown"] is False  # as Triton, no error
    assert served["unknown_model"] == "StatusCode.NOT_FOUND"
    assert served["server"]["name"] == "graphgen" and "classification" in served["server"]["extensions"]
    metadata = served["metadata"]
    assert metadata["name"] == "lite" and metadata["versions"] == ["1"] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "3", str(SIZE), str(SIZE)]}]
    assert metadata["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": ["-1", "1000"]}]
    assert served["index"]["models"] == [{"name": "lite", "version": "1", "state": "READY"}]


def test_infer_equals_in_process_onnxruntime(served):
    assert served["logits_equal"], served["logits_max_diff"]
    response = served["response"]
    assert response["model_name"] == "lite" and response["model_version"] == "1" and response["id"] == "r1"


def test_classification_extension(served):
    assert served["classification_shape"] == [3, 3]
    for row, indices, values in zip(served["classification"], served["expected_top3"], served["expected_values"]):
        parsed = [entry.split(":", 2) for entry in row]
        assert [int(index) for _, index, _ in parsed] == indices
        assert [float(value) for value, _, _ in parsed] == pytest.approx(values, abs=1e-5)
        assert all(label for _, _, label in parsed)  # ImageNet names, e.g. "tench"


def test_statistics_count_the_calls(served):
    (stats,) = served["statistics"]["model_stats"]
    assert stats["name"] == "lite" and stats["version"] == "1"
    inference = stats["inference_stats"]
    assert int(inference["success"]["count"]) == 2  # two infer calls
    assert int(stats["inference_count"]) == 6  # of 3 rows each
    assert int(stats["execution_count"]) == 2
    assert int(inference["compute_infer"]["ns"]) > 0
