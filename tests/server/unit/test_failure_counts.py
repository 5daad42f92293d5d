"""Every refused inference request counts once among its model's failures (ModelStatistics' ``fail`` and
``nv_inference_request_failure`` with Triton's reason), whether the front-end refused its wire format
(a JSON tensor of the wrong element count, a malformed parameter) or the core refused its contents (binary
data of the wrong size): the real runtime, the REST app and the gRPC servicer in this process.
"""

from __future__ import annotations

import asyncio
import json
import re

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from graphgen_protos import kserve_v2_pb2 as kpb
from graphgen_server.config import ServerConfig
from graphgen_server.core.runtime import LocalRuntime
from graphgen_server.frontends import kserve_common
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.grpc_kserve import KServeServicer
from graphgen_server.frontends.http_listener import runner_options
from graphgen_server.frontends.http_routes import KServeHttp
from graphgen_server.frontends.metrics import metrics_app
from tests.support.server import Aborted, FakeContext, add_tiny_model

SHAPE = [1, 3, 32, 32]


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    add_tiny_model(repository)
    return repository


def _json_infer(elements: int) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": SHAPE, "data": [0.5] * elements}]}
    ).encode()


def _binary_infer(size: int) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": SHAPE, "parameters": {"binary_data_size": size}}]}
    ).encode()
    return header + bytes(size), {"Inference-Header-Content-Length": str(len(header))}


def _grpc_infer(raw_size: int, profile: str | None = None) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input", datatype="FP32", shape=SHAPE)
    request.raw_input_contents.append(bytes(raw_size))
    if profile is not None:
        request.parameters["profile"].string_param = profile  # must be a bool
    return request


def test_each_refusal_counts_once_with_its_reason_on_both_protocols(repository):
    runtime = LocalRuntime(ServerConfig(repository=repository, device="cpu", workers=2))
    runtime.load()
    good = 4 * 3 * 32 * 32

    async def go():
        servicer = KServeServicer(runtime, CallGate())
        rest = TestServer(KServeHttp(runtime, CallGate(), runtime.config).app())
        await rest.start_server(**runner_options())
        metrics = TestServer(metrics_app(runtime))
        await metrics.start_server()
        statuses = []
        async with TestClient(rest) as client, TestClient(metrics) as scraper:
            binary, headers = _binary_infer(good - 4)
            for body, extra in [(_json_infer(7), {}), (binary, headers), (_json_infer(good // 4), {})]:
                response = await client.post("/v2/models/tiny/infer", data=body, headers=extra)
                statuses.append((response.status, (await response.text())[:80]))
            for request in (_grpc_infer(good, profile="yes"), _grpc_infer(8), _grpc_infer(good)):
                try:
                    await servicer.ModelInfer(request, FakeContext())
                    statuses.append("OK")
                except Aborted as refused:
                    statuses.append(refused.code)
            page = await (await scraper.get("/metrics")).text()
        return statuses, page, (await kserve_common.statistics(runtime, "tiny", "1"))[0]

    try:
        statuses, page, stats = asyncio.run(go())
    finally:
        asyncio.run(runtime.close())
    assert [s[0] if isinstance(s, tuple) else s for s in statuses] == [
        400,  # the JSON tensor's element count (refused by the REST codec)
        400,  # binary data of the wrong size (refused by the core)
        200,
        grpc.StatusCode.INVALID_ARGUMENT,  # profile not a bool (refused by the gRPC front-end)
        grpc.StatusCode.INVALID_ARGUMENT,  # raw contents of the wrong size (refused by the core)
        "OK",
    ]
    assert stats["inference_stats"]["fail"]["count"] == 4 and stats["inference_stats"]["success"]["count"] == 2
    failures = re.search(r'nv_inference_request_failure\{model="tiny",reason="OTHER",version="1"\} (\S+)', page)
    assert failures is not None and float(failures.group(1)) == 4, page
