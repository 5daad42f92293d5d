"""Clients that try to stall the server: compression bombs on both protocols, with and without the token,
while gRPC and HTTP health are polled every 100 ms; JSON nested 200,000 deep; a Content-Length of
99,999,999,999 with no body; headers and bodies that trickle; oversized gRPC metadata.

Whatever they do, every health answer comes within 250 ms (plus the machine's own scheduling stalls,
measured in a bomb-free phase: see _health_problems), each of them gets its status (413,
401, 400, 408, UNIMPLEMENTED, RESOURCE_EXHAUSTED; never 500 or a stall), and the server's memory (its
front-end processes included) grows by less than 100 MiB although each bomb inflates to 2 GiB.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from graphgen_protos import kserve_v2_pb2 as kpb
from graphgen_protos import kserve_v2_pb2_grpc
from tests.support.hostile import MIB, HealthPoller, descendants, grpc_raw_call, gzip_bomb, http_request, rss_bytes
from tests.support.server import ServerProcess, add_tiny_model

BOMBS = 4
HEALTH_WITHIN_S = 0.25
RSS_GROWTH = 100 * MIB
INFER = "/v2/models/tiny/infer"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
TOKEN = "s3cret-token"
SLOW_S = 2  # --http-header-timeout and --http-body-timeout of the servers here


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    add_tiny_model(repository)
    return repository


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(2048 * MIB)  # ~2 MB


@pytest.fixture(scope="module")
def server(repository):
    args = ["--http-header-timeout", str(SLOW_S), "--http-body-timeout", str(SLOW_S)]
    with ServerProcess(repository, args) as process:
        yield process


def _infer_json(rows: int = 1) -> bytes:
    data = np.random.default_rng(0).standard_normal((rows, 3, 32, 32)).astype(np.float32)
    tensor = {"name": "input", "datatype": "FP32", "shape": list(data.shape), "data": data.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


class PeakRss:
    """The largest resident memory of the server (its front-end processes included), sampled every
    20 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pids = [pid, *descendants(pid)]  # (found once: scanning /proc each time would load this process)
        self.peak = self._now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _now(self) -> int:
        return sum(rss_bytes(pid, children=False) for pid in self.pids)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._now())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def _bombard(
    server: ServerProcess, bomb: bytes, headers: dict[str, str]
) -> tuple[list, list, HealthPoller, HealthPoller, int]:
    """BOMBS gzip bombs over HTTP and as many over gRPC, all at once, health polled meanwhile.

    Returns the HTTP answers, the gRPC answers, the health answers of a bomb-free phase just before
    (as long as the bombs took), those during the bombs, and the memory growth at the peak."""
    http_headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", **headers}
    metadata = tuple((k.lower(), v) for k, v in headers.items())
    base = rss_bytes(server.process.pid)
    with HealthPoller(server.address, server.http_port) as health, PeakRss(server.process.pid) as rss:
        started = time.monotonic()
        time.sleep(0.5)  # some answers before the bombs too
        with ThreadPoolExecutor(2 * BOMBS) as pool:
            https = [
                pool.submit(http_request, server.http_port, "POST", INFER, bomb, http_headers) for _ in range(BOMBS)
            ]
            grpcs = [
                pool.submit(grpc_raw_call, server.port, MODEL_INFER, bomb, compressed="gzip", metadata=metadata)
                for _ in range(BOMBS)
            ]
            http_answers = [f.result(timeout=60) for f in https]
            grpc_answers = [f.result(timeout=60) for f in grpcs]
        time.sleep(0.5)
        took = time.monotonic() - started
    with HealthPoller(server.address, server.http_port) as quiet:
        time.sleep(max(took, 2.0))
    return http_answers, grpc_answers, quiet, health, rss.peak - base


def _health_problems(quiet: HealthPoller, health: HealthPoller) -> list[str]:
    """Every answer during the bombs within HEALTH_WITHIN_S, give or take this machine's own stalls.

    On a machine with cores to spare the bomb-free phase's slowest answer is a few milliseconds and
    the bound is 250 ms; on one shared and oversubscribed (here: load 8-18 on 2 cores) the scheduler
    alone delays answers by hundreds of ms now and then, bombs or not: that much more is allowed."""
    problems, load = [], os.getloadavg()[0]
    for name, times, calm in (("gRPC", health.grpc_s, quiet.grpc_s), ("HTTP", health.http_s, quiet.http_s)):
        assert len(times) >= 6, f"{name} health was asked only {len(times)} times"
        slowest, bound = max(times), HEALTH_WITHIN_S + max(calm)
        print(
            f"{name} health during the bombs: {len(times)} answers, slowest {slowest * 1000:.0f} ms, median "
            f"{np.median(times) * 1000:.0f} ms; without bombs: slowest {max(calm) * 1000:.0f} ms (load {load:.1f})"
        )
        if slowest > bound or np.median(times) > 0.05:
            problems.append(f"{name} health answers took up to {slowest:.3f}s: {sorted(times)[-5:]}")
    return problems


def _bombs_leave_health_answering(server: ServerProcess, bomb: bytes, headers: dict[str, str]):
    """_bombard, and the health answers checked; on an oversubscribed machine a second try is allowed
    (a burst of the scheduler's during the bombs alone can exceed the bound)."""
    for attempt in (1, 2):
        http_answers, grpc_answers, quiet, health, growth = _bombard(server, bomb, headers)
        problems = _health_problems(quiet, health)
        if not problems or attempt == 2 or os.getloadavg()[0] <= (os.cpu_count() or 1):
            break
        print(f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: the bombs once more")
    assert not problems, problems
    return http_answers, grpc_answers, growth


def test_gzip_bombs_on_both_protocols_leave_health_answering_and_memory_flat(server, bomb):
    http_answers, grpc_answers, growth = _bombs_leave_health_answering(server, bomb, {})
    print(f"bombs: HTTP answered in {[round(a.seconds, 2) for a in http_answers]} s; RSS +{growth / MIB:.0f} MiB")
    for answer in http_answers:
        assert answer.status == 413, answer
        assert b"gzip body inflated is over the server's limit of 67108864 bytes" in answer.body
    for answer in grpc_answers:  # refused from its header: gRPC would inflate it whole first
        assert answer["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0]), answer
        assert answer["grpc-message"] == "Compression algorithm 'gzip' is disabled."
    assert growth < RSS_GROWTH, f"the server's memory grew by {growth / MIB:.0f} MiB"
    # The same server inflates an honest gzip body and answers it.
    honest = http_request(server.http_port, "POST", INFER, gzip_compress(_infer_json()), {"Content-Encoding": "gzip"})
    assert honest.status == 200 and json.loads(honest.body)["outputs"][0]["shape"] == [1, 10]


def gzip_compress(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def test_without_the_token_bombs_are_refused_before_they_are_read(repository, tmp_path, bomb):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    with ServerProcess(repository, ["--token-file", str(token_file)]) as server:
        http_answers, grpc_answers, growth = _bombs_leave_health_answering(
            server, bomb, {"Authorization": "Bearer wrong"}
        )
        print(f"bombs with a wrong token: HTTP answered in {[round(a.seconds, 2) for a in http_answers]} s")
        assert [a.status for a in http_answers] == [401] * BOMBS
        for answer in grpc_answers:
            assert answer["grpc-status"] in {
                str(c.value[0]) for c in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED)
            }
        assert growth < RSS_GROWTH, f"the server's memory grew by {growth / MIB:.0f} MiB"


def test_json_nested_200000_deep_is_a_400_naming_the_limit(server):
    deep = b"[" * 200_000 + b"]" * 200_000
    for body in (deep, b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": ' + deep + b"}]}"):
        answer = http_request(server.http_port, "POST", INFER, body, {"Content-Type": "application/json"})
        assert answer.status == 400 and b"the server takes at most 64" in answer.body, answer


def test_a_content_length_beyond_the_limit_is_answered_413_at_once(server):
    answer = http_request(
        server.http_port, "POST", INFER, headers={"Content-Length": "99999999999"}, send_body=False, timeout=10
    )
    assert answer.status == 413 and b"Content-Length 99999999999 is over the server's limit" in answer.body
    assert answer.seconds < 1.0, f"answered after {answer.seconds:.2f}s"


def test_slow_headers_and_bodies_time_out(server):
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed without an answer
        assert time.monotonic() - started < SLOW_S + 2
    answer = http_request(server.http_port, "POST", INFER, b'{"inputs": [', {"Content-Length": "1000"}, timeout=10)
    assert answer.status == 408 and f"did not arrive within {SLOW_S}s".encode() in answer.body
    assert answer.seconds < SLOW_S + 2


def test_grpc_metadata_beyond_its_limit_is_refused_and_health_answers(server):
    with grpc.insecure_channel(server.address) as channel:
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ServerLive(kpb.ServerLiveRequest(), metadata=(("x-big", "a" * (1 << 20)),), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "metadata size exceeds" in refused.value.details()
        assert stub.ServerLive(kpb.ServerLiveRequest(), timeout=5).live


def test_with_grpc_compression_on_a_compressed_request_is_answered(repository):
    request = kpb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 3, 32, 32])
    request.raw_input_contents.append(np.zeros((1, 3, 32, 32), np.float32).tobytes())
    with ServerProcess(repository, ["--grpc-compression"]) as server, grpc.insecure_channel(server.address) as channel:
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        answer = stub.ModelInfer(request, compression=grpc.Compression.Gzip, timeout=30)
        assert answer.outputs[0].shape == [1, 10]
