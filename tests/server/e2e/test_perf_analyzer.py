"""NVIDIA's perf_analyzer against a server of two front-end processes: every load mode it has.

Synchronous calls over gRPC and HTTP, ``--async`` over both, ``--streaming`` (gRPC's
ModelStreamInfer), at 8 concurrent requests, with perf_analyzer's default random data. Each run
must end 0 and every request it counted must be one the server's statistics counted (summed over
both front-ends: none counted twice, none lost). Skipped where perf_analyzer is not installed
(tests/support/perf_analyzer.py says how to install it).
"""

from __future__ import annotations

import re

import grpc
import pytest

from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_protos import kserve_v2_pb2_grpc
from tests.support.perf_analyzer import needs_perf_analyzer, run_perf_analyzer
from tests.support.server import ServerProcess, add_tiny_model

pytestmark = needs_perf_analyzer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    add_tiny_model(repository)
    with ServerProcess(repository, ["--frontends", "2", "--device", "cpu"]) as process:
        yield process


def served(server) -> int:
    with grpc.insecure_channel(server.address) as channel:
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        (stats,) = stub.ModelStatistics(pb.ModelStatisticsRequest(name="tiny"), timeout=30).model_stats
    return stats.inference_stats.success.count + stats.inference_stats.fail.count


@pytest.mark.parametrize(
    ("protocol", "mode"),
    [("grpc", ()), ("http", ()), ("grpc", ("--async",)), ("http", ("--async",)), ("grpc", ("--streaming",))],
    ids=["grpc", "http", "grpc async", "http async", "grpc streaming"],
)
def test_perf_analyzer_runs_in_every_mode(server, protocol, mode):
    before = served(server)
    done = run_perf_analyzer(server, protocol, "--concurrency-range", "8", *mode)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Throughput:" in done.stdout and "Successful request count" in done.stdout
    # perf_analyzer counts the requests of its measured windows only: the server saw at least those.
    counted = sum(int(n) for n in re.findall(r"Request count: (\d+)", done.stdout))
    assert served(server) - before >= counted > 0, done.stdout[-2000:]
