"""Prometheus /metrics: Triton's series, counted from what the server did, parsed by prometheus_client."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_protos import kserve_v2_pb2_grpc
from graphgen_server.core.statistics import ModelStats, RequestRecord, VersionStats
from graphgen_server.frontends.metrics import CpuCollector, exposition, make_registry
from tests.support.server import ServerProcess, add_tiny_model

SUCCEEDED, FAILED, ROWS, HTTP_SUCCEEDED = 5, 3, 2, 2
TRITON_COUNTERS = [
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
]


def infer_request(shape: tuple[int, ...]) -> pb.ModelInferRequest:
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    request = pb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input", datatype="FP32", shape=shape)
    request.raw_input_contents.append(x.tobytes())
    return request


def scrape(url: str) -> tuple[str, dict]:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return text, {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (buckets: the le given)."""
    family = families[name]
    return sum(
        s.value
        for s in family.samples
        if all(s.labels.get(k) == v for k, v in labels.items()) and not s.name.endswith(("_sum", "_count"))
    )


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    with ServerProcess(repo) as server:
        _, before = scrape(server.metrics_url)
        with grpc.insecure_channel(server.address) as channel:
            stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(SUCCEEDED):
                stub.ModelInfer(infer_request((ROWS, 3, 32, 32)), timeout=60)
            for _ in range(FAILED):
                with pytest.raises(grpc.RpcError):
                    stub.ModelInfer(infer_request((ROWS, 3, 31, 32)), timeout=60)  # the wrong size
        body = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3072}]}
        for _ in range(HTTP_SUCCEEDED):
            request = urllib.request.Request(
                f"http://{server.http_address}/v2/models/tiny/infer", json.dumps(body).encode()
            )
            urllib.request.urlopen(request, timeout=60).read()
        profiled = {**body, "parameters": {"profile": True}}
        request = urllib.request.Request(
            f"http://{server.http_address}/v2/models/tiny/infer", json.dumps(profiled).encode()
        )
        urllib.request.urlopen(request, timeout=60).read()
        text, after = scrape(server.metrics_url)
    return before, text, after


def test_counters_equal_the_requests_made(scraped):
    before, _, after = scraped
    labels = {"model": "tiny", "version": "1"}
    assert value(before, "nv_inference_request_success", **labels) == 0
    assert value(after, "nv_inference_request_success", **labels) == SUCCEEDED + HTTP_SUCCEEDED + 1  # + profiled
    assert value(after, "nv_inference_request_failure", **labels) == FAILED
    assert value(after, "nv_inference_request_failure", reason="OTHER", **labels) == FAILED  # the request's fault
    assert value(after, "graphgen_profiled_requests", **labels) == 1
    assert {s.labels["reason"] for s in after["nv_inference_request_failure"].samples} == {
        "REJECTED",
        "CANCELED",
        "BACKEND",
        "OTHER",
    }
    assert value(after, "nv_inference_count", **labels) == SUCCEEDED * ROWS + HTTP_SUCCEEDED + 1
    # One execution per call at a time (a profiled call may run its model more than once).
    assert value(after, "nv_inference_exec_count", **labels) >= SUCCEEDED + HTTP_SUCCEEDED + 1
    for name in TRITON_COUNTERS[4:]:
        assert value(after, name, **labels) > 0, name
    assert value(after, "nv_inference_request_duration_us", **labels) >= value(
        after, "nv_inference_compute_infer_duration_us", **labels
    )


def test_series_carry_tritons_exact_names_and_types(scraped):
    _, text, after = scraped
    for name in TRITON_COUNTERS:
        assert after[name].type == "counter"
        assert f"# TYPE {name} counter\n" in text and f"\n{name}{{" in text  # no _total: Triton's dashboards
    assert f'\nnv_inference_request_success{{model="tiny",version="1"}} {SUCCEEDED + HTTP_SUCCEEDED + 1}' in text


def test_graphgens_own_series(scraped):
    _, _, after = scraped
    labels = {"model": "tiny", "version": "1"}
    assert value(after, "graphgen_queued_images", **labels) == 0
    assert value(after, "graphgen_model_ready", **labels) == 1
    (provider,) = after["graphgen_model_provider"].samples
    assert provider.labels["provider"].endswith("ExecutionProvider")
    batches = after["graphgen_batch_size"]
    assert batches.type == "histogram"
    count = next(s.value for s in batches.samples if s.name == "graphgen_batch_size_count")
    assert count == value(after, "nv_inference_exec_count", **labels)
    assert value(after, "graphgen_batch_size", le="1.0", **labels) == count - SUCCEEDED  # the rest ran 2 rows
    assert value(after, "graphgen_batch_size", le="2.0", **labels) == count


def test_tritons_cpu_metrics(scraped, tmp_path):
    _, _, after = scraped
    (total,) = after["nv_cpu_memory_total_bytes"].samples
    (used,) = after["nv_cpu_memory_used_bytes"].samples
    (utilization,) = after["nv_cpu_utilization"].samples
    assert 0 < used.value < total.value and 0 <= utilization.value <= 1
    # Utilization is busy / (busy + idle) jiffies since the previous scrape.
    (tmp_path / "meminfo").write_text("MemTotal: 1000 kB\nMemAvailable: 250 kB\n")
    collector = CpuCollector(tmp_path)
    for line, expected in (("cpu  10 0 10 80 0 0 0 0 0 0", 0.2), ("cpu  40 0 10 90 10 0 0 0 0 0", 0.6)):
        (tmp_path / "stat").write_text(line + "\ncpu0 1 2 3\n")
        families = {f.name: f.samples[0].value for f in collector.collect()}
        assert families["nv_cpu_utilization"] == pytest.approx(expected)
        assert families["nv_cpu_memory_used_bytes"] == 750 * 1024


def test_two_registries_in_one_process_keep_their_series_apart():
    def runtime(name: str, successes: int) -> Callable[[], list[VersionStats]]:
        stats = ModelStats()
        for _ in range(successes):
            stats.record_request(RequestRecord(ok=True, total_s=0.001, rows=1))
        return lambda: [VersionStats(name, "1", True, "", 0, stats)]

    first, second = make_registry(runtime("a", 2)), make_registry(runtime("b", 3))
    for registry, name, expected in ((first, "a", 2), (second, "b", 3)):
        families = {f.name: f for f in text_string_to_metric_families(exposition(registry).decode())}
        (sample,) = families["nv_inference_request_success"].samples
        assert sample.labels["model"] == name and sample.value == expected
