"""Profiles from a busy server: two profiles of ResNet-50 asked while 8 clients classify in a loop agree.

Both name the same slowest layer (or tied group) and rank the layers above 2% of the time alike
(Spearman ≥ 0.8), while the server keeps answering the clients; each says its runs' CPU waits and
which figure heads its rows, and its wait for the profiler is not queue time.
"""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import classifier_pb2_grpc
from tests.support.profiling import figure, spearman, top_group
from tests.support.server import ServerProcess, add_model

CLIENTS = 8
RUNS = 20  # the fastest of 20 runs: under load, more runs give each layer more chances of an undisturbed one
ABOVE = 0.02  # layers above 2% of the profile's time are ranked


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    add_model(repository, "resnet50")
    with ServerProcess(repository) as process:
        yield process


def test_two_profiles_asked_of_a_server_serving_8_looping_clients_agree(server):
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    tensor = cpb.Tensor(shape=x.shape, data=x.tobytes())
    plain = cpb.ClassifyRequest(model="resnet50", tensor=tensor)
    profiled = cpb.ClassifyRequest(model="resnet50", tensor=tensor, profile=True, profile_runs=RUNS)
    stop, served, looping = threading.Event(), [], threading.Barrier(CLIENTS + 1)

    def client() -> None:
        with grpc.insecure_channel(server.address) as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            stub.Classify(plain, timeout=600)
            looping.wait(timeout=600)
            while not stop.is_set():
                stub.Classify(plain, timeout=600)
                served.append(1)

    clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in clients:
        thread.start()
    try:
        looping.wait(timeout=600)  # every client has been answered once and loops now
        with grpc.insecure_channel(server.address) as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            before = len(served)
            answers = [stub.Classify(profiled, timeout=600) for _ in range(2)]
            assert len(served) > before  # the clients were answered meanwhile
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=600)
    first, second = (answer.profile for answer in answers)
    figures = [{row.layer: figure(p, row) for row in p.layers} for p in (first, second)]
    total = sum(figures[0].values())
    ranked = [layer for layer, time in figures[0].items() if time / total >= ABOVE and layer in figures[1]]
    assert len(ranked) >= 10
    rho = spearman([figures[0][layer] for layer in ranked], [figures[1][layer] for layer in ranked])
    assert rho >= 0.8, (rho, first.notes, second.notes)
    assert set(top_group(first)) & set(top_group(second)), (top_group(first), top_group(second))
    for answer in answers:
        profile, timings = answer.profile, answer.timings
        assert profile.headline in ("median", "min") and len(profile.run_cpu_waits) == RUNS
        if profile.headline == "min":
            assert any("runs were disturbed" in note for note in profile.notes)
        # Queue is the wait for a worker (and, the profile holding the model, for its calls in flight);
        # the profiler's own waits and the session's build are said apart.
        assert timings.queue_us + timings.profile_setup_us + timings.profile_wait_us + timings.inference_us <= (
            timings.total_us
        )
