"""The HTTP/REST layer in-process over a fake runtime: routing, statuses, messages, inference."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from graphgen_server.config import ServerConfig
from graphgen_server.core.api import Inferred, OutputTensor, Timings
from graphgen_server.core.errors import NotFound, QueueFull
from graphgen_server.core.requests import to_array
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.http_listener import runner_options
from graphgen_server.frontends.http_routes import KServeHttp
from graphgen_server.tensors import TensorInfo

TIMINGS = Timings(0.001, 0.002, 0.003, 0.004, 0.010, 2)


class FakeRuntime:
    """Model "m" (versions 1 and 2; version 9 is not ready); "busy" has a full queue; ``infer`` answers ``inferred``."""

    def __init__(self, inferred: Inferred | None = None) -> None:
        self.seen: list = []
        self.inferred = inferred

    def find(self, name: str, version: str = ""):
        self.seen.append((name, version))
        if name == "busy":
            raise QueueFull("model busy: queue full")
        if name != "m":
            raise NotFound(f"model {name!r} is not in the repository")
        return self._model(version or "2")

    @staticmethod
    def _model(version: str) -> SimpleNamespace:
        x, y = TensorInfo("x", "FP32", (None, 3)), TensorInfo("y", "FP32", (None, 2))
        loaded = SimpleNamespace(inputs=[x], outputs=[y])
        return SimpleNamespace(name="m", version=version, ready=version != "9", served=lambda: loaded)

    ready = find

    def all(self) -> list:
        return [self._model(version) for version in ("1", "2", "9")]

    def versions(self, name: str) -> list[str]:
        if name != "m":
            raise NotFound(f"model {name!r} is not in the repository")
        return ["1", "2"]

    async def statistics(self, name: str = "", version: str = "") -> list:
        if name:
            self.find(name, version)  # (raises for an unknown model)
        return []

    def refused(self, name: str, version: str, error: BaseException) -> None:
        self.seen.append(("refused", name, version, type(error).__name__))

    async def classify(self, *args, **kwargs):
        raise AssertionError("REST has no Classify")

    async def infer(self, name, version="", *, inputs, outputs=(), profile):
        self.seen.append(("infer", name, version, list(inputs), list(outputs), profile))
        assert self.inferred is not None
        return self.inferred


def run(requests, runtime: FakeRuntime | None = None, gate: CallGate | None = None):
    runtime = runtime or FakeRuntime()

    async def go():
        config = ServerConfig(repository=".", max_message_bytes=1024)
        app = KServeHttp(runtime, gate or CallGate(), config).app()  # type: ignore[arg-type]
        server = TestServer(app)
        await server.start_server(**runner_options())  # as graphgen's listener runs it (TestServer drops kwargs)
        async with TestClient(server) as client:
            out = []
            for method, path, body, *headers in requests:
                response = await client.request(method, path, data=body, headers=headers[0] if headers else None)
                content = await response.read()
                document = json.loads(content) if response.content_type == "application/json" and content else None
                out.append((response.status, document, response.headers, content))
            return out, runtime.seen

    answers, seen = asyncio.run(go())
    return [(status, document) for status, document, _, _ in answers], seen, answers


def test_runtime_answers_and_errors_map_to_http_statuses():
    (ok, missing, busy, versioned), seen, _ = run(
        [
            ("GET", "/v2/models/m", None),
            ("GET", "/v2/models/x", None),
            ("GET", "/v2/models/busy", None),
            ("GET", "/v2/models/m/versions/2", None),
        ]
    )
    assert ok == (
        200,
        {
            "name": "m",
            "versions": ["1", "2"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
        },
    )
    assert missing == (404, {"error": "model 'x' is not in the repository"})
    assert busy == (429, {"error": "model busy: queue full"})
    assert versioned[0] == 200 and seen[-1] == ("m", "2")


def test_ready_is_a_status_code():
    answers, _, _ = run([("GET", "/v2/models/m/ready", None), ("GET", "/v2/models/m/versions/9/ready", None)])
    assert [status for status, _ in answers] == [200, 400]


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("POST", "/v2/systemsharedmemory/region/r/register", 501, "--allow-client-shm"),
        ("POST", "/v2/cudasharedmemory/region/r/register", 501, "no CUDA shared memory"),
        ("POST", "/v2/models/m/trace/setting", 501, "tracing"),
        ("GET", "/v2/logging", 501, "--log-level"),
        ("POST", "/v2/models/m/versions/1/generate_stream", 501, "generate"),
        ("GET", "/v3/anything", 404, "no endpoint /v3/anything"),
        ("DELETE", "/v2/models/m", 405, "Method Not Allowed"),
        ("POST", "/v2/models/m/infer", 413, "over the server's limit of 1024 bytes"),  # max_message_bytes
    ],
)
def test_what_is_not_served_says_why(method, path, status, words):
    body = b"x" * 2048 if status == 413 else None
    ((got, answer),), _, _ = run([(method, path, body)])
    assert got == status and words in answer["error"]


def test_infer_hands_the_runtime_its_types_and_writes_json_and_binary_outputs():
    y = np.array([[0.5, -1.0]], np.float32)
    top = np.array([[b"0.500000:0:cat"]], dtype=object)
    runtime = FakeRuntime(
        Inferred("m", "2", [OutputTensor("y", "FP32", y), OutputTensor("t", "BYTES", top)], TIMINGS, None)
    )
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    document = {
        "id": "r1",
        "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}],
        "outputs": [
            {"name": "y", "parameters": {"binary_data": True}},
            {"name": "t", "parameters": {"classification": 1}},
        ],
    }
    header = json.dumps(document).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    ((status, _),), seen, ((_, _, response_headers, content),) = run(
        [("POST", "/v2/models/m/versions/2/infer", header + x.tobytes(), headers)], runtime
    )
    assert status == 200
    ((_, name, version, inputs, outputs, profile),) = [call for call in seen if call[0] == "infer"]
    assert seen[0] == ("m", "2")  # the model was found ready before the body was read
    assert (name, version, profile.wanted) == ("m", "2", False)
    assert [(t.name, t.field) for t in inputs] == [("x", "inputs[0]")]
    np.testing.assert_array_equal(to_array(inputs[0]), x)
    assert [(o.name, o.classification) for o in outputs] == [("y", None), ("t", 1)]
    length = int(response_headers["Inference-Header-Content-Length"])
    answer = json.loads(content[:length])
    assert (answer["id"], answer["model_version"]) == ("r1", "2")
    assert answer["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
        {"name": "t", "datatype": "BYTES", "shape": [1, 1], "data": ["0.500000:0:cat"]},
    ]
    assert content[length:] == y.tobytes()


def test_a_closed_gate_refuses_calls_with_503_and_the_runtime_is_not_called():
    gate = CallGate()
    gate.closed = True
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}).encode()
    answers, seen, _ = run([("POST", "/v2/models/m/infer", body), ("GET", "/v2/models/m", None)], gate=gate)
    assert [status for status, _ in answers] == [503, 503] and "shutting down" in answers[0][1]["error"]
    assert seen == []
