"""Tensors in shared memory through both KServe front-ends, in-process over the real runtime (the tiny model):
inputs read from a region, outputs written to one and answered without contents, each mistake named."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from graphgen_protos import kserve_v2_pb2 as kpb
from graphgen_server.config import ServerConfig
from graphgen_server.core.control import LocalControl
from graphgen_server.core.shared_memory import SharedMemory
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.grpc_kserve import KServeServicer
from graphgen_server.frontends.http_routes import KServeHttp
from tests.support.server import Aborted, InProcessServer, add_tiny_model
from tests.support.shm import shm_object

SIZE, BATCH = 32, 2
INPUT_BYTES, OUTPUT_BYTES = BATCH * 3 * SIZE * SIZE * 4, BATCH * 10 * 4
IN, OUT = "input_region", "output_region"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    server = InProcessServer(repo)
    shared = SharedMemory(LocalControl(), allowed=True)
    server.servicers["k"] = KServeServicer(server.runtime, CallGate(), None, shared)
    server.shared = shared
    config = ServerConfig(repository=repo)
    server.http = KServeHttp(server.runtime, CallGate(), config, shared_memory=shared).app()
    with shm_object(INPUT_BYTES + 4096, "in") as inputs, shm_object(OUTPUT_BYTES, "out") as outputs:
        server.run(shared.register(IN, "/" + inputs.name, 4096, INPUT_BYTES))  # an offset into the object
        server.run(shared.register(OUT, "/" + outputs.name, 0, OUTPUT_BYTES))
        server.blocks = (inputs, outputs)
        yield server
        server.run(shared.unregister())
        server.close()


def _batch(served, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((BATCH, 3, SIZE, SIZE), dtype=np.float32)
    np.ndarray(x.shape, np.float32, buffer=served.blocks[0].buf, offset=4096)[:] = x
    return x


def _expected(served, x: np.ndarray) -> np.ndarray:
    request = kpb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    answer = served.call("k", "ModelInfer", request)
    return np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(BATCH, 10)


def _grpc_request(
    input_size=INPUT_BYTES, output_size=OUTPUT_BYTES, output_region=OUT, **extra
) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[BATCH, 3, SIZE, SIZE])
    tensor.parameters["shared_memory_region"].string_param = IN
    tensor.parameters["shared_memory_byte_size"].int64_param = input_size
    output = request.outputs.add(name="logits")
    if output_region:
        output.parameters["shared_memory_region"].string_param = output_region
        output.parameters["shared_memory_byte_size"].int64_param = output_size
    for key, value in extra.items():
        output.parameters[key].int64_param = value
    return request


def test_grpc_input_and_output_in_shared_memory(served):
    x = _batch(served, 1)
    expected = _expected(served, x)
    served.blocks[1].buf[:OUTPUT_BYTES] = b"\0" * OUTPUT_BYTES
    answer = served.call("k", "ModelInfer", _grpc_request())
    (output,) = answer.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("logits", "FP32", [BATCH, 10])
    assert list(answer.raw_output_contents) == [b""]  # no contents: they are in the region (as Triton)
    written = np.frombuffer(served.blocks[1].buf, np.float32, count=BATCH * 10).reshape(BATCH, 10)
    assert np.array_equal(written, expected)


def test_grpc_input_in_shared_memory_output_in_the_answer(served):
    x = _batch(served, 2)
    answer = served.call("k", "ModelInfer", _grpc_request(output_region=""))
    assert np.array_equal(
        np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(BATCH, 10), _expected(served, x)
    )


@pytest.mark.parametrize(
    ("request_", "field", "words"),
    [
        (
            lambda: _grpc_request(input_size=INPUT_BYTES - 4),
            "inputs[0].parameters.shared_memory_byte_size",
            f"{INPUT_BYTES - 4} bytes, but FP32 of shape [2, 3, 32, 32] needs {INPUT_BYTES}",
        ),
        (
            lambda: _grpc_request(input_size=INPUT_BYTES + 4),
            "inputs[0].parameters.shared_memory_byte_size",
            "go beyond region 'input_region'",
        ),
        (
            lambda: _grpc_request(output_size=OUTPUT_BYTES - 4),
            "outputs[0].parameters.shared_memory_byte_size",
            f"{OUTPUT_BYTES - 4} bytes cannot hold output 'logits'",
        ),
        (
            lambda: _grpc_request(output_region="nope"),
            "outputs[0].parameters.shared_memory_region",
            "no system shared-memory region 'nope' is registered",
        ),
        (
            lambda: _grpc_request(classification=3),
            "outputs[0].parameters",
            "cannot set both 'shared_memory_region' and 'classification'",
        ),
        (
            lambda: _grpc_request(shared_memory_offset=OUTPUT_BYTES),
            "outputs[0].parameters.shared_memory_offset",
            "is outside region 'output_region'",
        ),
    ],
)
def test_grpc_mistakes_name_the_parameter(served, request_, field, words):
    with pytest.raises(Aborted) as refused:
        served.call("k", "ModelInfer", request_())
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details.startswith(f"{field}: ") and words in refused.value.details


def test_grpc_contents_and_shared_memory_together_are_refused(served):
    request = _grpc_request()
    request.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(Aborted) as refused:
        served.call("k", "ModelInfer", request)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "inputs[0].contents" in refused.value.details


def test_grpc_shared_memory_rpcs(served):
    status = served.call("k", "SystemSharedMemoryStatus", kpb.SystemSharedMemoryStatusRequest())
    assert sorted(status.regions) == [IN, OUT] and status.regions[IN].offset == 4096
    assert status.regions[IN].key == "/" + served.blocks[0].name and status.regions[IN].byte_size == INPUT_BYTES
    assert list(
        served.call("k", "SystemSharedMemoryStatus", kpb.SystemSharedMemoryStatusRequest(name=OUT)).regions
    ) == [OUT]
    assert served.call("k", "CudaSharedMemoryStatus", kpb.CudaSharedMemoryStatusRequest()).regions == {}
    served.call("k", "CudaSharedMemoryUnregister", kpb.CudaSharedMemoryUnregisterRequest())  # (perf_analyzer's cleanup)
    cases = [
        (
            "SystemSharedMemoryStatus",
            kpb.SystemSharedMemoryStatusRequest(name="x"),
            grpc.StatusCode.NOT_FOUND,
            "Unable to find system shared memory region: 'x'",
        ),
        (
            "SystemSharedMemoryRegister",
            kpb.SystemSharedMemoryRegisterRequest(name=IN, key="/k", byte_size=4),
            grpc.StatusCode.ALREADY_EXISTS,
            "already in manager",
        ),
        (
            "SystemSharedMemoryRegister",
            kpb.SystemSharedMemoryRegisterRequest(name="k", key="k/x", byte_size=4),
            grpc.StatusCode.INVALID_ARGUMENT,
            "key: 'k/x' is not a POSIX shared-memory name",
        ),
        (
            "CudaSharedMemoryStatus",
            kpb.CudaSharedMemoryStatusRequest(name=IN),
            grpc.StatusCode.NOT_FOUND,
            "registered as system shared memory, not CUDA",
        ),
        (
            "CudaSharedMemoryRegister",
            kpb.CudaSharedMemoryRegisterRequest(name="c"),
            grpc.StatusCode.UNIMPLEMENTED,
            "no CUDA shared memory",
        ),
        ("TraceSetting", kpb.TraceSettingRequest(), grpc.StatusCode.UNIMPLEMENTED, "per-layer profile"),
        ("LogSettings", kpb.LogSettingsRequest(), grpc.StatusCode.UNIMPLEMENTED, "--log-level"),
    ]
    for method, request, code, words in cases:
        with pytest.raises(Aborted) as refused:
            served.call("k", method, request)
        assert refused.value.code == code and words in refused.value.details, (method, refused.value.details)


def _http(served, method: str, path: str, **kwargs):
    async def call():
        async with TestClient(TestServer(served.http)) as client:
            response = await client.request(method, path, **kwargs)
            return response.status, await response.read()

    return served.run(call())


def _http_body(input_parameters: dict, output_parameters: dict | None) -> dict:
    body: dict = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [BATCH, 3, SIZE, SIZE], "parameters": input_parameters}
        ]
    }
    if output_parameters is not None:
        body["outputs"] = [{"name": "logits", "parameters": output_parameters}]
    return body


SHM_IN = {"shared_memory_region": IN, "shared_memory_byte_size": INPUT_BYTES}
SHM_OUT = {"shared_memory_region": OUT, "shared_memory_byte_size": OUTPUT_BYTES}


def test_http_input_and_output_in_shared_memory(served):
    x = _batch(served, 3)
    expected = _expected(served, x)
    status, body = _http(served, "POST", "/v2/models/tiny/infer", json=_http_body(SHM_IN, SHM_OUT))
    assert status == 200, body
    assert json.loads(body)["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [BATCH, 10]}]  # no data
    written = np.frombuffer(served.blocks[1].buf, np.float32, count=BATCH * 10).reshape(BATCH, 10)
    assert np.array_equal(written, expected)
    status, body = _http(served, "POST", "/v2/models/tiny/infer", json=_http_body(SHM_IN, None))
    assert status == 200 and np.allclose(np.array(json.loads(body)["outputs"][0]["data"]).reshape(BATCH, 10), expected)


@pytest.mark.parametrize(
    ("inputs", "outputs", "words"),
    [
        ({**SHM_IN, "binary_data_size": 8}, None, "inputs[0]: sets 'binary_data_size' and 'shared_memory_region'"),
        ({"shared_memory_region": IN}, None, "inputs[0].parameters.shared_memory_byte_size: must be given along"),
        ({"shared_memory_byte_size": 8}, None, "inputs[0].parameters.shared_memory_byte_size: is given without"),
        (
            {**SHM_IN, "shared_memory_offset": -1},
            None,
            "inputs[0].parameters.shared_memory_offset: must be a byte count",
        ),
        ({**SHM_IN, "shared_memory_region": "nope"}, None, "inputs[0].parameters.shared_memory_region: no system"),
        (SHM_IN, {**SHM_OUT, "binary_data": True}, "outputs[0].parameters: cannot set both"),
        (SHM_IN, {**SHM_OUT, "classification": 2}, "outputs[0].parameters: cannot set both"),
    ],
)
def test_http_mistakes_name_the_field(served, inputs, outputs, words):
    status, body = _http(served, "POST", "/v2/models/tiny/infer", json=_http_body(inputs, outputs))
    assert status == 400 and json.loads(body)["error"].startswith(words), body


def test_http_shared_memory_endpoints(served):
    status, body = _http(served, "GET", "/v2/systemsharedmemory/status")
    assert status == 200 and sorted(r["name"] for r in json.loads(body)) == [IN, OUT]
    status, body = _http(served, "GET", f"/v2/systemsharedmemory/region/{IN}/status")
    key = "/" + served.blocks[0].name
    assert json.loads(body) == [{"name": IN, "key": key, "offset": 4096, "byte_size": INPUT_BYTES}]
    assert _http(served, "GET", "/v2/cudasharedmemory/status") == (200, b"[]")
    assert _http(served, "POST", "/v2/cudasharedmemory/unregister")[0] == 200
    with shm_object(64, "h") as block:
        register = "/v2/systemsharedmemory/region/extra/register"
        assert _http(served, "POST", register, json={"key": "/" + block.name, "byte_size": 64})[0] == 200
        assert _http(served, "POST", register, json={"key": "/" + block.name, "byte_size": 64})[0] == 400  # exists
        assert _http(served, "POST", "/v2/systemsharedmemory/region/extra/unregister")[0] == 200
    cases = [
        ("GET", "/v2/systemsharedmemory/region/x/status", None, 404, "Unable to find system shared memory region"),
        ("POST", "/v2/systemsharedmemory/register", {"key": "/k", "byte_size": 4}, 400, "a region name is needed"),
        ("POST", "/v2/systemsharedmemory/region/k/register", {"byte_size": 4}, 400, "no 'key' field"),
        ("POST", "/v2/systemsharedmemory/region/k/register", {"key": "/k"}, 400, "no 'byte_size' field"),
        ("POST", "/v2/systemsharedmemory/region/k/register", {"key": "/k", "byte_size": "4"}, 400, "byte_size: must"),
        ("POST", "/v2/cudasharedmemory/region/k/register", {}, 501, "no CUDA shared memory"),
        ("POST", "/v2/systemsharedmemory/status", None, 405, "Method Not Allowed"),
    ]
    for method, path, body, code, words in cases:
        status, answer = _http(served, method, path, json=body)
        assert status == code and words in json.loads(answer)["error"], (path, answer)
