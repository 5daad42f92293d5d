"""The HTTP/REST layer in-process over a fake KServe servicer: routing, statuses, messages."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_server.config import ServerConfig
from graphgen_server.errors import CallGate, NotFound, QueueFull, abort_with_status
from graphgen_server.http import KServeHttp


class FakeServicer:
    """Answers like the KServe servicer, through the same error decorator."""

    def __init__(self) -> None:
        self.gate = CallGate()
        self.seen: list = []

    @abort_with_status
    async def ModelMetadata(self, request, context):
        self.seen.append(request)
        if request.name == "busy":
            raise QueueFull("model busy: queue full")
        if request.name != "m":
            raise NotFound(f"model {request.name!r} is not in the repository")
        return pb.ModelMetadataResponse(name="m", versions=["1", "2"], platform="onnxruntime_onnx")

    @abort_with_status
    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=request.version != "9")


def run(requests):
    async def go():
        servicer = FakeServicer()
        app = KServeHttp(servicer, ServerConfig(repository=".", max_message_bytes=1024)).app()
        async with TestClient(TestServer(app)) as client:
            out = []
            for method, path, body in requests:
                response = await client.request(method, path, data=body)
                out.append((response.status, await response.json() if response.content_length else None))
            return out, servicer.seen

    return asyncio.run(go())


def test_servicer_answers_and_errors_map_to_http_statuses():
    (ok, missing, busy, versioned), seen = run(
        [("GET", "/v2/models/m", None), ("GET", "/v2/models/x", None), ("GET", "/v2/models/busy", None),
         ("GET", "/v2/models/m/versions/2", None)]
    )  # fmt: skip
    assert ok == (
        200,
        {"name": "m", "versions": ["1", "2"], "platform": "onnxruntime_onnx", "inputs": [], "outputs": []},
    )
    assert missing == (404, {"error": "model 'x' is not in the repository"})
    assert busy == (429, {"error": "model busy: queue full"})
    assert versioned[0] == 200 and (seen[-1].name, seen[-1].version) == ("m", "2")


def test_ready_is_a_status_code():
    answers, _ = run([("GET", "/v2/models/m/ready", None), ("GET", "/v2/models/m/versions/9/ready", None)])
    assert [status for status, _ in answers] == [200, 400]


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("POST", "/v2/systemsharedmemory/region/r/register", 501, "shared-memory"),
        ("GET", "/v2/cudasharedmemory/status", 501, "shared-memory"),
        ("POST", "/v2/models/m/trace/setting", 501, "tracing"),
        ("GET", "/v2/logging", 501, "--log-level"),
        ("POST", "/v2/models/m/versions/1/generate_stream", 501, "generate"),
        ("GET", "/v3/anything", 404, "no endpoint /v3/anything"),
        ("DELETE", "/v2/models/m", 405, "Method Not Allowed"),
        ("POST", "/v2/models/m/infer", 413, "Request Entity Too Large"),  # over max_message_bytes
    ],
)
def test_what_is_not_served_says_why(method, path, status, words):
    body = b"x" * 2048 if status == 413 else None
    ((got, answer),), _ = run([(method, path, body)])
    assert got == status and words in answer["error"]
