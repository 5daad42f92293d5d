"""README's "Triton compatibility" tables say what the code does, and leave nothing of Triton out.

Triton's own lists come from tritonclient (its GRPCInferenceService and ModelConfig descriptors,
read in a subprocess: its protobuf names clash with graphgen's) and from Triton's HTTP routes.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import message_factory

from graphgen_protos import kserve_v2_pb2
from graphgen_server.config import ServerConfig
from graphgen_server.core.control import LocalControl
from graphgen_server.core.runtime import LocalRuntime
from graphgen_server.core.shared_memory import SharedMemory
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.grpc_kserve import KServeServicer
from graphgen_server.frontends.http_routes import KServeHttp
from tests.support.server import Aborted, FakeContext

README = Path(__file__).resolve().parents[3] / "README.md"
STATUSES = {"supported", "ignored with a warning", "refused"}
ROW = re.compile(r"^\| `([^`]+)` \| ([a-z ]+) \|", re.M)
# Triton's HTTP/REST routes (its http_server.cc), as the README writes them.
TRITON_HTTP = [
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models/{m}[/versions/{v}]",
    "GET /v2/models/{m}[/versions/{v}]/ready",
    "GET /v2/models/{m}[/versions/{v}]/config",
    "GET /v2/models[/{m}[/versions/{v}]]/stats",
    "POST /v2/models/{m}[/versions/{v}]/infer",
    "POST /v2/models/{m}[/versions/{v}]/generate[_stream]",
    "POST /v2/repository/index",
    "POST /v2/repository/models/{m}/load",
    "POST /v2/repository/models/{m}/unload",
    "GET /v2/systemsharedmemory[/region/{r}]/status",
    "POST /v2/systemsharedmemory/region/{r}/register",
    "POST /v2/systemsharedmemory[/region/{r}]/unregister",
    "GET /v2/cudasharedmemory[/region/{r}]/status",
    "POST /v2/cudasharedmemory/region/{r}/register",
    "POST /v2/cudasharedmemory[/region/{r}]/unregister",
    "GET\\|POST /v2[/models/{m}]/trace/setting",
    "GET\\|POST /v2/logging",
]
TRITON_NAMES = r"""
import json
from tritonclient.grpc import model_config_pb2, service_pb2
service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
def paths(descriptor, prefix="", depth=2):
    out = []
    for field in descriptor.fields:
        out.append(prefix + field.name)
        if depth > 1 and field.message_type is not None and not field.message_type.GetOptions().map_entry:
            out += paths(field.message_type, prefix + field.name + ".", depth - 1)
    return out
print(json.dumps({"rpcs": [m.name for m in service.methods],
                  "config": [f.name for f in model_config_pb2.ModelConfig.DESCRIPTOR.fields],
                  "config_paths": paths(model_config_pb2.ModelConfig.DESCRIPTOR)}))
"""


def table(heading: str) -> dict[str, str]:
    """The rows of the README table whose first header cell starts with ``heading``: name -> status."""
    text = README.read_text()
    start = text.index(f"| {heading}")
    end = text.find("\n\n", start)
    rows = dict(ROW.findall(text[start:end]))
    assert set(rows.values()) <= STATUSES, set(rows.values()) - STATUSES
    return rows


@pytest.fixture(scope="module")
def triton() -> dict[str, list[str]]:
    done = subprocess.run([sys.executable, "-c", TRITON_NAMES], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "No module named 'tritonclient'" in done.stderr:
        pytest.skip("tritonclient not installed")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _unimplemented(tmp_path: Path) -> dict[str, bool]:
    """Per RPC of graphgen's service: whether it answers UNIMPLEMENTED (called with an empty request)."""
    service = kserve_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    runtime = LocalRuntime(ServerConfig(repository=tmp_path))  # no model: calls reach the runtime and its NOT_FOUND
    servicer = KServeServicer(runtime, CallGate(), None, SharedMemory(LocalControl(), allowed=True))
    out = {}
    for method in service.methods:
        if method.client_streaming:  # (ModelStreamInfer: served where the servicer defines it)
            out[method.name] = "ModelStreamInfer" not in vars(KServeServicer)
            continue
        request = message_factory.GetMessageClass(method.input_type)()
        try:
            asyncio.run(getattr(servicer, method.name)(request, FakeContext()))
            out[method.name] = False
        except Aborted as refused:
            out[method.name] = refused.code == grpc.StatusCode.UNIMPLEMENTED
    return out


def test_every_triton_rpc_has_a_row_true_to_graphgens_service(triton, tmp_path):
    rows = table("Triton gRPC RPC")
    assert sorted(rows) == sorted(triton["rpcs"]), "README rows differ from Triton's GRPCInferenceService"
    unimplemented = _unimplemented(tmp_path)
    assert sorted(unimplemented) == sorted(triton["rpcs"]), "graphgen's proto must declare every Triton RPC"
    for rpc, status in rows.items():
        assert unimplemented[rpc] == (status == "refused"), f"README says {rpc} is {status}; update the table"


def _sample(pattern: str) -> tuple[str, str]:
    """A concrete method and path for a README endpoint pattern (optional parts left out)."""
    method, path = pattern.replace("\\|", "|").split(" ", 1)
    path = re.sub(r"\[[^\[\]]*\]", "", re.sub(r"\[[^\[\]]*\]", "", path))  # (nested brackets)
    path = path.replace("{m}", "m").replace("{v}", "1").replace("{r}", "r").replace("…", "status")
    return method.split("|")[-1], path


def test_every_triton_endpoint_has_a_row_true_to_the_http_server(tmp_path):
    rows = table("Triton HTTP/REST endpoint")
    assert set(TRITON_HTTP) <= set(rows), set(TRITON_HTTP) - set(rows)

    async def statuses() -> dict[str, tuple[int, str]]:
        runtime = LocalRuntime(ServerConfig(repository=tmp_path))  # no model: calls reach the runtime and its NOT_FOUND
        shared = SharedMemory(LocalControl(), allowed=True)
        app = KServeHttp(runtime, CallGate(), ServerConfig(repository=tmp_path), shared_memory=shared).app()
        async with TestClient(TestServer(app)) as client:
            out = {}
            for pattern in TRITON_HTTP:
                method, path = _sample(pattern)
                response = await client.request(method, path, json={})
                out[pattern] = (response.status, (await response.text())[:200])
            return out

    for pattern, (status, answer) in asyncio.run(statuses()).items():
        served = status != 501 and "no endpoint" not in answer
        assert served == (rows[pattern] == "supported"), (
            f"README says {pattern} is {rows[pattern]}: got {status} {answer}"
        )


def _paths(descriptor, prefix: str = "", depth: int = 2) -> set[str]:
    """Dotted field paths of a message descriptor, ``depth`` levels deep."""
    out = set()
    for field in descriptor.fields:
        out.add(prefix + field.name)
        if depth > 1 and field.message_type is not None and not field.message_type.GetOptions().map_entry:
            out |= _paths(field.message_type, f"{prefix}{field.name}.", depth - 1)
    return out


def test_every_config_field_has_a_row_true_to_graphgens_model_config(triton):
    from graphgen_protos import model_config_pb2
    from graphgen_server.repository.model_config import REFUSED_FIELDS

    rows = table("Triton `config.pbtxt` field")
    assert set(triton["config"]) <= set(rows), set(triton["config"]) - set(rows)
    assert set(rows) <= set(triton["config_paths"]), set(rows) - set(triton["config_paths"])  # no invented field
    honoured = _paths(model_config_pb2.ModelConfig.DESCRIPTOR)
    for path, status in rows.items():
        refused = path.split(".")[0] in REFUSED_FIELDS
        expected = "refused" if refused else "supported" if path in honoured else "ignored with a warning"
        assert status == expected, f"README says config field {path} is {status}, the code makes it {expected}"
