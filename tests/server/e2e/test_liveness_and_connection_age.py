"""What Kubernetes asks of a running server: liveness apart from readiness, and connections that age.

- A server whose only model fails to load is live (health service ``live`` SERVING, HTTP
  ``/v2/health/live`` 200) but not ready (``""`` NOT_SERVING, ``/v2/health/ready`` 400): the
  liveness probe leaves it running, the readiness probe keeps it out of the Service.
- With ``--max-connection-age`` the server sends GOAWAY to connections older than that: a client
  calling in a loop reconnects (its channel goes READY again) and no call fails.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from graphgen_protos import kserve_v2_pb2 as kpb
from graphgen_protos import kserve_v2_pb2_grpc
from tests.support.server import ServerProcess, add_tiny_model

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_server_whose_model_fails_to_load_is_live_but_not_ready(tmp_path):
    broken = tmp_path / "broken" / "1" / "model.onnx"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not an ONNX model")
    with ServerProcess(tmp_path, []) as server:
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            statuses = {
                service: health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
                for service in ("live", "")
            }
        http = f"http://{server.http_address}/v2/health"
        live, ready = _http_status(f"{http}/live"), _http_status(f"{http}/ready")
    assert statuses == {"live": SERVING, "": NOT_SERVING}
    assert (live, ready) == (200, 400)


def test_live_stays_serving_when_the_last_model_is_unloaded(tmp_path):
    add_tiny_model(tmp_path)
    with ServerProcess(tmp_path, ["--model-control"]) as server, grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        kserve = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        before = health.Check(health_pb2.HealthCheckRequest(service="live"), timeout=10).status
        kserve.RepositoryModelUnload(kpb.RepositoryModelUnloadRequest(model_name="tiny"), timeout=60)
        after = [health.Check(health_pb2.HealthCheckRequest(service=s), timeout=10).status for s in ("live", "")]
    assert before == SERVING and after == [SERVING, NOT_SERVING]


def test_max_connection_age_makes_clients_reconnect_without_a_failed_call(tmp_path):
    add_tiny_model(tmp_path)
    with ServerProcess(tmp_path, ["--max-connection-age", "0.5"]) as server:
        channel = grpc.insecure_channel(server.address)
        ready_seen = []
        changed = threading.Lock()

        def follow(state: grpc.ChannelConnectivity) -> None:
            with changed:
                if state == grpc.ChannelConnectivity.READY:
                    ready_seen.append(time.monotonic())

        channel.subscribe(follow, try_to_connect=True)
        kserve = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        calls, failures = 0, []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                assert kserve.ServerLive(kpb.ServerLiveRequest(), timeout=10).live
                calls += 1
            except grpc.RpcError as error:
                failures.append(error.code())
            time.sleep(0.02)
        channel.unsubscribe(follow)
        channel.close()
    assert failures == [] and calls > 20
    assert len(ready_seen) >= 3, ready_seen  # about every 0.5 s (±10% jitter) a new connection
