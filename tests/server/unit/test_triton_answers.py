"""Triton's answers for an unknown model, an unknown version, a version that is not ready, a model
with no ready version and a malformed version: every model RPC of the README's compatibility
table, over both protocols (in-process, the real runtime), each row with the Triton source that
decides its answer. Triton files are named by repository: core (triton-inference-server/core,
``src/``) and server (triton-inference-server/server, ``src/``).

ModelReady follows released Triton: core's ``InferenceServer::ModelIsReady`` (server.cc, before
core #502) ignores the model lookup's failure, so an unknown model or version is ``ready: false``;
core's main branch since #502 (June 2026) looks the model up first and would answer NOT_FOUND.
Two answers differ from Triton's on purpose, each said in its row: a RepositoryModelLoad of a model
the repository does not hold (Triton: INTERNAL; a client's mistake is never INTERNAL here) and the
version check (Triton's ``std::stol`` also reads "1abc" as 1; graphgen takes digits only).
"""

from __future__ import annotations

import json

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from graphgen_protos import kserve_v2_pb2 as kpb
from graphgen_server.config import ServerConfig
from graphgen_server.core.model_control import ModelControl
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.grpc_kserve import KServeServicer
from graphgen_server.frontends.http_routes import KServeHttp
from tests.support.server import Aborted, FakeContext, InProcessServer, add_tiny_model

OK, NOT_READY = "OK", "ready: false"
NOT_FOUND, UNAVAILABLE, INVALID = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INVALID_ARGUMENT,
)
# core/src/model_repository_manager/model_lifecycle.cc ModelLifeCycle::GetModel, through each RPC's lookup:
GET_MODEL = "core model_lifecycle.cc ModelLifeCycle::GetModel via "
IS_READY = (
    "core server.cc InferenceServer::ModelIsReady (released); server grpc/grpc_server.cc "
    "CommonHandler::RegisterModelReady, http_server.cc HTTPAPIServer::HandleModelReady ('Model version not ready')"
)
STATS = "core tritonserver.cc TRITONSERVER_ServerModelStatistics (ModelReadyVersions; INVALID_ARG)"
VERSION = "server common.cc GetModelVersionFromString (INVALID_ARG)"

# The repository: "m" serves version 1, its version 2 fails to load, it has no version 3;
# "broken" has one version, which fails to load; "nope" does not exist.
# (case, RPC, model, version, gRPC answer, HTTP status, words of graphgen's message, Triton's source)
CASES = [
    ("unknown model", "ModelReady", "nope", "", NOT_READY, 400, "", IS_READY),
    ("unknown version", "ModelReady", "m", "3", NOT_READY, 400, "", IS_READY),
    ("version not ready", "ModelReady", "m", "2", NOT_READY, 400, "", IS_READY),
    ("no ready version", "ModelReady", "broken", "", NOT_READY, 400, "", IS_READY),
    ("ready version", "ModelReady", "m", "1", OK, 200, "", IS_READY),
    ("malformed version", "ModelReady", "m", "x", INVALID, 400, "version: 'x' is not a version number", VERSION),
    ("unknown model", "ModelMetadata", "nope", "", NOT_FOUND, 404, "'nope' is not in the repository",
     GET_MODEL + "tritonserver.cc TRITONSERVER_ServerModelMetadata ('is not found')"),
    ("unknown version", "ModelMetadata", "m", "3", NOT_FOUND, 404, "has no version '3'",
     GET_MODEL + "TRITONSERVER_ServerModelMetadata ('version 3 is not found')"),
    ("version not ready", "ModelMetadata", "m", "2", UNAVAILABLE, 503, "failed to load",
     GET_MODEL + "TRITONSERVER_ServerModelMetadata ('is not at ready state': UNAVAILABLE)"),
    ("no ready version", "ModelMetadata", "broken", "", NOT_FOUND, 404, "has no ready version (version 1: failed to load",
     GET_MODEL + "TRITONSERVER_ServerModelMetadata ('has no available versions': NOT_FOUND)"),
    ("malformed version", "ModelMetadata", "m", "-1", INVALID, 400, "'-1' is not a version number", VERSION),
    ("unknown model", "ModelConfig", "nope", "", NOT_FOUND, 404, "'nope'", GET_MODEL + "TRITONSERVER_ServerModelConfig"),
    ("unknown version", "ModelConfig", "m", "3", NOT_FOUND, 404, "'3'", GET_MODEL + "TRITONSERVER_ServerModelConfig"),
    ("version not ready", "ModelConfig", "m", "2", UNAVAILABLE, 503, "failed to load",
     GET_MODEL + "TRITONSERVER_ServerModelConfig"),
    ("no ready version", "ModelConfig", "broken", "", NOT_FOUND, 404, "has no ready version",
     GET_MODEL + "TRITONSERVER_ServerModelConfig"),
    ("malformed version", "ModelConfig", "m", "1abc", INVALID, 400, "'1abc' is not a version number",
     VERSION + "; Triton's std::stol would read '1abc' as 1"),
    ("unknown model", "ModelInfer", "nope", "", NOT_FOUND, 404, "'nope'", GET_MODEL + "TRITONSERVER_InferenceRequestNew"),
    ("unknown version", "ModelInfer", "m", "3", NOT_FOUND, 404, "'3'", GET_MODEL + "TRITONSERVER_InferenceRequestNew"),
    ("version not ready", "ModelInfer", "m", "2", UNAVAILABLE, 503, "failed to load",
     GET_MODEL + "TRITONSERVER_InferenceRequestNew"),
    ("no ready version", "ModelInfer", "broken", "", NOT_FOUND, 404, "has no ready version",
     GET_MODEL + "TRITONSERVER_InferenceRequestNew"),
    ("malformed version", "ModelInfer", "m", "x", INVALID, 400, "'x' is not a version number", VERSION),
    ("unknown model", "ModelStreamInfer", "nope", "", NOT_FOUND, None, "'nope'",
     GET_MODEL + "TRITONSERVER_InferenceRequestNew (the stream's error_message)"),
    ("no ready version", "ModelStreamInfer", "broken", "", NOT_FOUND, None, "has no ready version",
     GET_MODEL + "TRITONSERVER_InferenceRequestNew (the stream's error_message)"),
    ("unknown model", "ModelStatistics", "nope", "", INVALID, 400, "requested model 'nope' is not available", STATS),
    ("unknown version", "ModelStatistics", "m", "3", INVALID, 400, "version is not available for model 'm'", STATS),
    ("version not ready", "ModelStatistics", "m", "2", INVALID, 400, "version is not available for model 'm'", STATS),
    ("no ready version", "ModelStatistics", "broken", "", INVALID, 400, "requested model 'broken' is not available", STATS),
    ("malformed version", "ModelStatistics", "m", "x", INVALID, 400, "'x' is not a version number", VERSION),
    ("every model: ready versions only", "ModelStatistics", "", "", OK, 200, "m/1", STATS),
    ("metadata lists ready versions", "ModelMetadata", "m", "", OK, 200, "1",
     "core tritonserver.cc TRITONSERVER_ServerModelMetadata (ModelReadyVersions)"),
    ("unknown model", "RepositoryModelUnload", "nope", "", OK, 200, "",
     "core model_repository_manager.cc ModelRepositoryManager::LoadUnloadModel (nothing to unload: success)"),
    ("unknown model (differs: Triton INTERNAL)", "RepositoryModelLoad", "nope", "", NOT_FOUND, 404, "'nope'",
     "core model_repository_manager.cc LoadUnloadModel: INTERNAL 'failed to poll from model repository'"),
]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo, "m")
    for model, version in (("m", 2), ("broken", 1)):
        (repo / model / str(version)).mkdir(parents=True)
        (repo / model / str(version) / "model.onnx").write_bytes(b"not an onnx model")
    server = InProcessServer(repo)

    async def nothing() -> None:
        pass

    control = ModelControl(server.runtime, nothing)
    server.servicers["k"] = KServeServicer(server.runtime, CallGate(), control)
    server.http = KServeHttp(server.runtime, CallGate(), ServerConfig(repository=repo), control).app()
    yield server
    control.close()
    server.close()


def _infer_request(model: str, version: str) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name="input", datatype="FP32", shape=[1, 3, 32, 32]).contents.fp32_contents.extend([0.0] * 3072)
    return request


GRPC_REQUESTS = {
    "ModelReady": lambda m, v: kpb.ModelReadyRequest(name=m, version=v),
    "ModelMetadata": lambda m, v: kpb.ModelMetadataRequest(name=m, version=v),
    "ModelConfig": lambda m, v: kpb.ModelConfigRequest(name=m, version=v),
    "ModelInfer": _infer_request,
    "ModelStreamInfer": _infer_request,
    "ModelStatistics": lambda m, v: kpb.ModelStatisticsRequest(name=m, version=v),
    "RepositoryModelUnload": lambda m, v: kpb.RepositoryModelUnloadRequest(model_name=m),
    "RepositoryModelLoad": lambda m, v: kpb.RepositoryModelLoadRequest(model_name=m),
}


def _grpc(served, rpc: str, model: str, version: str) -> tuple[object, str]:
    """(the status code, or OK / NOT_READY, and the message or the answer as text)."""
    request = GRPC_REQUESTS[rpc](model, version)
    if rpc == "ModelStreamInfer":

        async def stream():
            async def requests():
                yield request

            return [a async for a in served.servicers["k"].ModelStreamInfer(requests(), FakeContext())]

        (answer,) = served.run(stream())
        code, _, message = answer.error_message.partition(": ")
        return (getattr(grpc.StatusCode, code) if code else OK), message
    try:
        answer = served.call("k", rpc, request)
    except Aborted as refused:
        return refused.code, refused.details
    if rpc == "ModelReady":
        return (OK if answer.ready else NOT_READY), ""
    if rpc == "ModelStatistics":
        return OK, " ".join(f"{s.name}/{s.version}" for s in answer.model_stats)
    return OK, " ".join(getattr(answer, "versions", []))


def _http(served, rpc: str, model: str, version: str) -> tuple[int, str]:
    base = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
    method, path, body = {
        "ModelReady": ("GET", base + "/ready", None),
        "ModelMetadata": ("GET", base, None),
        "ModelConfig": ("GET", base + "/config", None),
        "ModelInfer": (
            "POST",
            base + "/infer",
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [0.0] * 3072}]},
        ),
        "ModelStatistics": ("GET", (base if model else "/v2/models") + "/stats", None),
        "RepositoryModelUnload": ("POST", f"/v2/repository/models/{model}/unload", None),
        "RepositoryModelLoad": ("POST", f"/v2/repository/models/{model}/load", None),
    }[rpc]

    async def call():
        async with TestClient(TestServer(served.http)) as client:
            response = await client.request(method, path, json=body)
            return response.status, await response.text()

    status, text = served.run(call())
    if status == 200 and rpc == "ModelStatistics":
        return status, " ".join(f"{s['name']}/{s['version']}" for s in json.loads(text)["model_stats"])
    if status == 200 and rpc == "ModelMetadata":
        return status, " ".join(json.loads(text)["versions"])
    return status, json.loads(text)["error"] if status != 200 and text else text


@pytest.mark.parametrize(
    ("case", "rpc", "model", "version", "grpc_answer", "http_status", "words", "source"),
    CASES,
    ids=[f"{c[1]}: {c[0]}" for c in CASES],
)
def test_answers_as_triton(served, case, rpc, model, version, grpc_answer, http_status, words, source):
    code, message = _grpc(served, rpc, model, version)
    assert code == grpc_answer and words in message, f"gRPC {rpc} ({case}): {code} {message!r}; Triton: {source}"
    if rpc == "ModelStatistics" and not model:
        assert message == "m/1", message  # (not m/2 nor broken/1: not ready)
    if http_status is not None:
        status, text = _http(served, rpc, model, version)
        assert status == http_status and words in text, f"HTTP {rpc} ({case}): {status} {text!r}; Triton: {source}"
