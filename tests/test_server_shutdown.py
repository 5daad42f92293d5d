"""SIGTERM under load: every accepted call is answered, later ones are refused, the process exits 0."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import classifier_pb2_grpc
from tests.server_helpers import ServerProcess, add_model

CLIENTS = 8
CALLS_PER_CLIENT = 200  # bounds the load loop
SIZE = 160


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_model(repo, "efficientnet_lite0", name="lite", resolution=SIZE)
    return repo


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_load_answers_every_accepted_call_and_exits_0(repository, sig):
    tensor = cpb.Tensor(shape=[1, 3, SIZE, SIZE], data=np.ones((1, 3, SIZE, SIZE), np.float32).tobytes())
    request = cpb.ClassifyRequest(model="lite", tensor=tensor, top_k=1)
    outcomes: list[tuple[float, float, str, str]] = []  # (sent, answered, status, details)
    lock = threading.Lock()

    with ServerProcess(repository, ["--grace", "30"]) as server:
        expected = classifier_pb2_grpc.ClassifierStub(grpc.insecure_channel(server.address)).Classify(request)
        best = expected.results[0].classes[0].index

        def client() -> None:
            with grpc.insecure_channel(server.address) as channel:
                stub = classifier_pb2_grpc.ClassifierStub(channel)
                for _ in range(CALLS_PER_CLIENT):
                    sent, details = time.monotonic(), ""
                    try:
                        answer = stub.Classify(request, timeout=60)
                        status = "OK" if answer.results[0].classes[0].index == best else "WRONG"
                    except grpc.RpcError as error:
                        status, details = error.code().name, error.details() or ""
                    with lock:
                        outcomes.append((sent, time.monotonic(), status, details))
                    if status != "OK":
                        return

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while sum(o[2] == "OK" for o in outcomes) < 3 * CLIENTS and time.monotonic() < deadline:
            time.sleep(0.01)
        signal_at = time.monotonic()
        server.signal(sig)
        health = _health_statuses(server.address, seconds=2.0)
        for thread in threads:
            thread.join(timeout=120)
        assert server.wait() == 0, server.log

    before = [o for o in outcomes if o[0] < signal_at]
    after = [o for o in outcomes if o[0] >= signal_at]
    # Sent before the signal: answered, or (still in transit when the gate closed) refused.
    assert all(o[2] == "OK" or (o[2] == "UNAVAILABLE" and "shutting down" in o[3]) for o in before), before
    # Sent after it: refused, never run half-way; CANCELLED only if it reached gRPC as it stopped.
    assert {o[2] for o in after} <= {"UNAVAILABLE", "CANCELLED"}, after
    assert any("shutting down" in o[3] for o in after), "no call was refused by the closing server"
    in_flight = [o for o in before if o[1] > signal_at and o[2] == "OK"]
    assert in_flight, "no call was in flight at the signal: the test proved nothing"
    assert "shutting down" in server.log and "stopped" in server.log
    assert "NOT_SERVING" in health, health  # seen while the calls in flight drained


def _health_statuses(address: str, seconds: float) -> list[str]:
    """Health checks in a bounded loop until the server stops answering."""
    seen = []
    deadline = time.monotonic() + seconds
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
            except grpc.RpcError as error:
                seen.append(error.code().name)
                break
            time.sleep(0.01)
    return seen
