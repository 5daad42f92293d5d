"""NaN and infinity: taken as Triton takes any value (perf_analyzer's random bytes hold them), refused with
``--refuse-nonfinite`` naming the field that holds them, whichever way the tensor came (in-process, real runtime)."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from graphgen_protos import kserve_v2_pb2 as kpb
from graphgen_server.config import ServerConfig
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.http_routes import KServeHttp
from tests.support.server import Aborted, InProcessServer, add_tiny_model

SIZE = 32
X = np.zeros((1, 3, SIZE, SIZE), np.float32)
X.flat[5], X.flat[7] = np.nan, np.inf


def _raw() -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input", datatype="FP32", shape=X.shape)
    request.raw_input_contents.append(X.tobytes())
    return request


def _typed() -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input", datatype="FP32", shape=X.shape).contents.fp32_contents.extend(X.ravel())
    return request


def _json() -> bytes:  # (Python's json writes NaN and Infinity, as tritonclient's does)
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(X.shape), "data": X.tolist()}]}
    ).encode()


def _binary() -> tuple[bytes, dict[str, str]]:
    header = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(X.shape)}]}
    header["inputs"][0]["parameters"] = {"binary_data_size": X.nbytes}
    text = json.dumps(header).encode()
    return text + X.tobytes(), {"Inference-Header-Content-Length": str(len(text))}


@pytest.fixture(scope="module", params=[False, True], ids=["default", "refuse-nonfinite"])
def served(request, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    server = InProcessServer(repo, refuse_nonfinite=request.param)
    server.refuse = request.param
    server.http = KServeHttp(
        server.runtime, CallGate(), ServerConfig(repository=repo, refuse_nonfinite=request.param)
    ).app()
    yield server
    server.close()


@pytest.mark.parametrize(
    ("request_", "field"), [(_raw, "raw_input_contents[0]"), (_typed, "inputs[0].contents.fp32_contents")]
)
def test_grpc(served, request_, field):
    if not served.refuse:
        answer = served.call("k", "ModelInfer", request_())
        assert np.frombuffer(answer.raw_output_contents[0], np.float32).shape == (10,)  # answered, NaN or not
        return
    with pytest.raises(Aborted) as refused:
        served.call("k", "ModelInfer", request_())
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details.startswith(f"{field}: holds NaN or infinite values (the first at flat index 5)")


@pytest.mark.parametrize(
    ("body", "field"), [(_json, "inputs[0].data"), (_binary, "inputs[0].parameters.binary_data_size")]
)
def test_http(served, body, field):
    made = body()
    data, headers = made if isinstance(made, tuple) else (made, {})

    async def call():
        async with TestClient(TestServer(served.http)) as client:
            response = await client.post("/v2/models/tiny/infer", data=data, headers=headers)
            return response.status, await response.read()

    status, answer = served.run(call())
    if not served.refuse:
        assert status == 200 and len(json.loads(answer)["outputs"][0]["data"]) == 10
    else:
        assert status == 400 and json.loads(answer)["error"].startswith(f"{field}: holds NaN or infinite values")
