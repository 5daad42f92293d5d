"""32 concurrent clients get exactly what they get one at a time, with dynamic batching on and off."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import classifier_pb2_grpc, kserve_v2_pb2_grpc
from graphgen_protos import kserve_v2_pb2 as kpb
from tests.support.server import ServerProcess, add_model

CLIENTS = 32
SIZE = 64
BATCHING = {"on": ["--max-batch", "8", "--batch-delay-us", "3000"], "off": ["--max-batch", "1"]}


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_model(repo, "efficientnet_lite0", name="lite", resolution=SIZE, num_classes=100)
    return repo


def _inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.standard_normal((1 + i % 2, 3, SIZE, SIZE), dtype=np.float32) for i in range(CLIENTS)]


def _call(address: str, array: np.ndarray) -> tuple[bytes, list, int]:
    """One client: raw logits through ModelInfer, and top-5 through Classify."""
    with grpc.insecure_channel(address) as channel:
        request = kpb.ModelInferRequest(model_name="lite")
        request.inputs.add(name="input", datatype="FP32", shape=array.shape)
        request.raw_input_contents.append(array.tobytes())
        logits = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=120)
        tensor = cpb.Tensor(shape=array.shape, data=array.tobytes())
        classes = classifier_pb2_grpc.ClassifierStub(channel).Classify(
            cpb.ClassifyRequest(model="lite", tensor=tensor, top_k=5), timeout=120
        )
    top = [[(c.index, c.score) for c in r.classes] for r in classes.results]
    return logits.raw_output_contents[0], top, classes.timings.batch_size


@pytest.mark.parametrize("batching", ["on", "off"])
def test_concurrent_clients_get_the_sequential_results(repository, batching):
    inputs = _inputs()
    with ServerProcess(repository, BATCHING[batching]) as server:
        sequential = [_call(server.address, array) for array in inputs]
        results: list = [None] * CLIENTS
        errors: list[BaseException] = []
        start = threading.Barrier(CLIENTS)

        def client(index: int) -> None:
            try:
                start.wait(timeout=60)
                results[index] = _call(server.address, inputs[index])
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not errors, errors[:3]
        with grpc.insecure_channel(server.address) as channel:
            stats = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
                kpb.ModelStatisticsRequest(name="lite"), timeout=30
            )
    for index, (concurrent, alone) in enumerate(zip(results, sequential)):
        assert concurrent[0] == alone[0], f"client {index}: logits differ from its sequential call"
        assert concurrent[1] == alone[1], f"client {index}: classes differ"
    batch_sizes = [r[2] for r in results]
    model = stats.model_stats[0]
    rows = sum(a.shape[0] for a in inputs)
    assert model.inference_count == 4 * rows  # 2 calls per input, sequential and concurrent
    if batching == "on":
        assert max(batch_sizes) > 2, batch_sizes  # requests of 1-2 rows were merged
        assert model.execution_count < 4 * CLIENTS
        assert any(s.batch_size > 2 for s in model.batch_stats)
    else:
        assert batch_sizes == [a.shape[0] for a in inputs]
        assert model.execution_count == 4 * CLIENTS
