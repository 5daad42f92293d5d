"""The client library in front of replicas: targets naming several servers, health-aware round robin, retries.

Servers here are in-process fakes (a KServe servicer counting calls, failing on demand) beside
grpc's own health service, so what is tested is the client and gRPC's balancing, quickly.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from graphgen_client import Client, ClientError
from graphgen_client.balancing import (
    RetryPolicy,
    TargetError,
    call_with_retries,
    channel_target,
    is_replica_set,
    with_default_port,
)
from graphgen_protos import kserve_v2_pb2 as kpb
from graphgen_protos import kserve_v2_pb2_grpc


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("127.0.0.1:8001", "127.0.0.1:8001"),
        ("graphgen.default.svc.cluster.local:8001", "graphgen.default.svc.cluster.local:8001"),
        ("dns:///graphgen:8001", "dns:///graphgen:8001"),
        ("127.0.0.1:1, 127.0.0.1:2,127.0.0.2:3", "ipv4:127.0.0.1:1,127.0.0.1:2,127.0.0.2:3"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
        ("ipv4:10.0.0.1:8001,10.0.0.2:8001", "ipv4:10.0.0.1:8001,10.0.0.2:8001"),
    ],
)
def test_channel_target(address, target):
    assert channel_target(address) == target
    assert is_replica_set(address) == (target != address or "dns:" in address or "ipv4:" in address)


@pytest.mark.parametrize(
    ("address", "dialled"),
    [
        ("127.0.0.1", "127.0.0.1:8001"),  # gRPC would dial 443 (issue 20)
        ("127.0.0.1:9000", "127.0.0.1:9000"),
        ("graphgen.example", "graphgen.example:8001"),
        ("[::1]", "[::1]:8001"),
        ("::1", "[::1]:8001"),
        ("[::1]:7", "[::1]:7"),
        ("10.0.0.1, 10.0.0.2:9", "10.0.0.1:8001,10.0.0.2:9"),
        ("dns:///graphgen.ns.svc", "dns:///graphgen.ns.svc:8001"),
        ("dns://10.0.0.53/graphgen", "dns://10.0.0.53/graphgen:8001"),
        ("dns:///graphgen:9", "dns:///graphgen:9"),
        ("ipv4:10.0.0.1,10.0.0.2:9", "ipv4:10.0.0.1:8001,10.0.0.2:9"),
        ("unix:/run/graphgen.sock", "unix:/run/graphgen.sock"),
    ],
)
def test_an_address_without_a_port_gets_the_servers_port(address, dialled):
    assert with_default_port(address) == dialled
    assert with_default_port("127.0.0.1", 8000) == "127.0.0.1:8000"  # (HTTP's, for a caller that needs it)


def test_the_client_dials_8001_for_a_bare_host():
    client = Client("127.0.0.1", timeout=1)
    try:
        assert client.address == "127.0.0.1:8001"
    finally:
        client.close()


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("a.example:1,b.example:2", "must give IP addresses"),
        ("127.0.0.1:1,[::1]:2", "cannot be mixed"),
        ("127.0.0.1,127.0.0.2:1", "expected host:port"),
    ],
)
def test_bad_lists_are_refused_with_the_reason(address, problem):
    with pytest.raises(TargetError, match=problem):
        channel_target(address)


class FakeError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def _sender(codes: list[grpc.StatusCode | None]):
    sent: list[float] = []

    def send(time_left: float) -> str:
        sent.append(time_left)
        code = codes[len(sent) - 1]
        if code is not None:
            raise FakeError(code)
        return "answer"

    return send, sent


def test_unavailable_is_retried_with_bounded_growing_backoff():
    send, sent = _sender([grpc.StatusCode.UNAVAILABLE] * 4 + [None])
    waits: list[float] = []
    policy = RetryPolicy(attempts=5, initial_backoff_s=0.1, max_backoff_s=0.3)
    answer = call_with_retries(send, 60, policy, sleep=waits.append, jitter=lambda top: top)
    assert answer == "answer" and len(sent) == 5
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.3])  # doubling, capped at max_backoff_s


def test_other_codes_are_not_retried_and_attempts_are_bounded():
    send, sent = _sender([grpc.StatusCode.INVALID_ARGUMENT])
    with pytest.raises(FakeError):
        call_with_retries(send, 60, RetryPolicy(), sleep=lambda s: None)
    assert len(sent) == 1
    send, sent = _sender([grpc.StatusCode.UNAVAILABLE] * 3)
    with pytest.raises(FakeError) as raised:
        call_with_retries(send, 60, RetryPolicy(attempts=3), sleep=lambda s: None)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE and len(sent) == 3


def test_no_retry_outlives_the_call_timeout():
    send, sent = _sender([grpc.StatusCode.UNAVAILABLE] * 5)
    with pytest.raises(FakeError):
        call_with_retries(send, 0.5, RetryPolicy(initial_backoff_s=1, max_backoff_s=1), jitter=lambda top: top)
    assert len(sent) == 1  # the first wait would pass the deadline
    assert 0 < sent[0] <= 0.5  # each attempt gets the time left, not a fresh timeout


def test_retry_policy_refuses_nonsense():
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(initial_backoff_s=2, max_backoff_s=1)


class CountingKServe(kserve_v2_pb2_grpc.GRPCInferenceServiceServicer):
    """ModelInfer answers its input doubled; the first ``fail`` calls end UNAVAILABLE."""

    def __init__(self, fail: int = 0) -> None:
        self.calls, self.fail, self.lock = 0, fail, threading.Lock()

    def ModelInfer(self, request, context):
        with self.lock:
            self.calls += 1
            failing = self.calls <= self.fail
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "refused for the test")
        x = np.frombuffer(request.raw_input_contents[0], "<f4")
        response = kpb.ModelInferResponse(model_name=request.model_name)
        response.outputs.add(name="doubled", datatype="FP32", shape=request.inputs[0].shape)
        response.raw_output_contents.append((2 * x).astype("<f4").tobytes())
        return response


class FakeServer:
    def __init__(self, fail: int = 0) -> None:
        self.kserve = CountingKServe(fail)
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        kserve_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.kserve, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(0)


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def test_infer_is_retried_after_unavailable_and_answers():
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    with FakeServer(fail=2) as server, Client(server.address, timeout=10) as client:
        outputs = client.infer("m", {"input": x})
        assert np.array_equal(outputs["doubled"], 2 * x) and outputs["doubled"].shape == (1, 2, 3)
        assert server.kserve.calls == 3 and client.retried == 2


def test_without_retries_unavailable_reaches_the_caller():
    with (
        FakeServer(fail=1) as server,
        Client(server.address, timeout=10, retry=RetryPolicy(attempts=1)) as client,
        pytest.raises(ClientError, match="UNAVAILABLE"),
    ):
        client.infer("m", {"input": np.zeros(2, np.float32)})


def test_round_robin_over_a_list_skips_servers_down_or_not_serving():
    x = np.ones(4, np.float32)
    with FakeServer() as first, FakeServer() as second, FakeServer() as draining:
        draining.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # being stopped: still answers
        target = f"{first.address},{second.address},{draining.address},127.0.0.1:{_closed_port()}"
        with Client(target, timeout=10) as client:
            client.wait_until_serving(10)
            for _ in range(40):
                assert np.array_equal(client.infer("m", {"input": x})["doubled"], 2 * x)
        # Both serving servers had calls; the NOT_SERVING one and the closed port none.
        assert first.kserve.calls >= 10 and second.kserve.calls >= 10, (first.kserve.calls, second.kserve.calls)
        assert first.kserve.calls + second.kserve.calls == 40 and draining.kserve.calls == 0
        assert client.retried == 0


def test_one_server_is_asked_whatever_its_health_says():
    """graphgen-client health/models must reach a server whose models all failed, to say so."""
    with FakeServer() as server:
        server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        with Client(server.address, timeout=5) as client:
            assert client.health() == "NOT_SERVING"
        with Client(f"ipv4:{server.address}", timeout=2) as client, pytest.raises(ClientError, match="UNAVAILABLE"):
            client.health()  # as a replica set: no replica to ask


def test_infer_refuses_arrays_without_a_kserve_datatype():
    with FakeServer() as server, Client(server.address) as client, pytest.raises(ValueError, match="datatype"):
        client.infer("m", {"input": np.zeros(2, np.complex64)})


def test_importing_the_client_leaves_kserve_messages_to_tritonclient():
    """Scripts using tritonclient import graphgen_client.local: KServe's protobuf names must stay free."""
    script = (
        "import sys, graphgen_client, graphgen_client.local; print(sorted(m for m in sys.modules if 'kserve' in m))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
