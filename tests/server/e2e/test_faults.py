"""Faults: clients that cancel mid-call leak nothing, and a signal under mixed load (images,
ModelInfer, a model being loaded) still answers every accepted call and exits 0; past the grace
period the calls still running are cancelled and the server still exits 0 promptly.

(tests/server/e2e/test_shutdown.py covers the signal under Classify load; a corrupt model file is in
tests/server/e2e/test_real_weights_served.py at start-up and tests/server/e2e/test_repository.py through RepositoryModelLoad.)
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import classifier_pb2_grpc, kserve_v2_pb2_grpc
from graphgen_protos import kserve_v2_pb2 as kpb
from tests.support.server import ServerProcess, add_model, encode

SIZE = 224  # a batch of 8 takes a good fraction of a second here: calls can be cut off mid-run
ROWS = 8
IN_FLIGHT = re.compile(r"for the (\d+) in flight")


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_model(repo, "efficientnet_lite0", name="lite", resolution=SIZE, num_classes=10)
    return repo


def _batch(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 3, SIZE, SIZE), dtype=np.float32)


def _infer(rows: int, seed: int = 0) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name="lite")
    request.inputs.add(name="input", datatype="FP32", shape=[rows, 3, SIZE, SIZE])
    request.raw_input_contents.append(_batch(rows, seed).tobytes())
    return request


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))


def test_cancelled_calls_leak_no_queue_place_thread_or_call(repository):
    queue = ROWS + 2 + 2  # room for one round's three calls: none is refused for a full queue
    args = ["--max-queue", str(queue), "--max-images", str(ROWS), "--max-batch", "4", "--grace", "30"]
    with ServerProcess(repository, args) as server, grpc.insecure_channel(server.address) as channel:
        kserve = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        classifier = classifier_pb2_grpc.ClassifierStub(channel)
        alone = {rows: kserve.ModelInfer(_infer(rows), timeout=120).raw_output_contents[0] for rows in (ROWS, 4)}
        threads_before = _threads(server.process.pid)
        image = encode(np.full((300, 400, 3), 90, np.uint8), "JPEG")
        cancelled = 0
        for round_ in range(12):
            calls = [
                kserve.ModelInfer.future(_infer(ROWS), timeout=120),  # beyond max-batch: runs alone
                classifier.Classify.future(cpb.ClassifyRequest(model="lite", images=[image] * 2), timeout=120),
            ]
            time.sleep(0.02 + 0.01 * (round_ % 4))  # admitted and running (or decoding) by now
            for call in calls:
                cancelled += call.cancel()
            try:  # and one cut off by its deadline
                kserve.ModelInfer(_infer(2), timeout=0.03)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert cancelled >= 12, "the calls finished before they could be cancelled: the test proved nothing"
        time.sleep(1.0)  # the runs already started finish
        # The whole queue is free again (8 + 4 rows at once), and answers are what they were.
        both = {rows: kserve.ModelInfer.future(_infer(rows), timeout=120) for rows in (ROWS, 4)}
        assert {rows: call.result().raw_output_contents[0] for rows, call in both.items()} == alone
        assert _threads(server.process.pid) <= threads_before + 2  # (a lazily started worker at most)
        server.signal(signal.SIGTERM)
        started = time.monotonic()
        assert server.wait() == 0
        assert time.monotonic() - started < 10  # nothing left in flight to wait 30 s for
    assert [int(n) for n in IN_FLIGHT.findall(server.log)] == [0], server.log
    assert "Traceback" not in server.log


def _sender(address: str, make_call, outcomes: list, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        with grpc.insecure_channel(address) as channel:
            for _ in range(500):  # bounded
                sent = time.monotonic()
                try:
                    make_call(channel)
                    outcomes.append((sent, "OK", ""))
                except grpc.RpcError as error:
                    outcomes.append((sent, error.code().name, error.details() or ""))
                    return
                if stop.is_set():
                    return

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_signal_under_mixed_load_with_a_model_loading_answers_every_accepted_call(repository, tmp_path):
    image = encode(np.full((240, 320, 3), 120, np.uint8), "PNG")
    kinds = {
        "images": lambda ch: classifier_pb2_grpc.ClassifierStub(ch).Classify(
            cpb.ClassifyRequest(model="lite", images=[image]), timeout=120
        ),
        "infer": lambda ch: kserve_v2_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(_infer(2), timeout=120),
    }
    outcomes: list[tuple[float, str, str]] = []
    load_outcome: list[str] = []
    stop = threading.Event()
    with ServerProcess(repository, ["--grace", "60", "--model-control"]) as server:
        threads = [_sender(server.address, kinds[k], outcomes, stop) for k in ("images", "infer") * 3]
        deadline = time.monotonic() + 60
        while sum(o[1] == "OK" for o in outcomes) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)

        def reload() -> None:  # a changed file: the version is loaded again while traffic flows
            (repository / "lite" / "1" / "model.onnx").touch()
            with grpc.insecure_channel(server.address) as channel:
                stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
                try:
                    stub.RepositoryModelLoad(kpb.RepositoryModelLoadRequest(model_name="lite"), timeout=120)
                    load_outcome.append("OK")
                except grpc.RpcError as error:
                    load_outcome.append(error.code().name)

        loader = threading.Thread(target=reload)
        loader.start()
        time.sleep(0.05)
        signal_at = time.monotonic()
        server.signal(signal.SIGTERM)
        loader.join(timeout=120)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        assert server.wait() == 0, server.log
    before = [o for o in outcomes if o[0] < signal_at]
    assert all(o[1] == "OK" or (o[1] == "UNAVAILABLE" and "shutting down" in o[2]) for o in before), before
    assert {o[1] for o in outcomes if o[0] >= signal_at} <= {"OK", "UNAVAILABLE", "CANCELLED"}
    assert load_outcome in (["OK"], ["UNAVAILABLE"]), load_outcome  # done, or refused as the gate closed
    assert "Traceback" not in server.log


def test_past_the_grace_period_running_calls_are_cancelled_and_the_server_exits_0(repository):
    outcomes: list[tuple[float, str, str]] = []
    stop = threading.Event()
    with ServerProcess(repository, ["--grace", "0.05", "--max-batch", "1", "--workers", "2"]) as server:
        threads = [
            _sender(
                server.address,
                lambda ch: kserve_v2_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(_infer(ROWS), timeout=120),
                outcomes,
                stop,
            )
            for _ in range(8)
        ]
        time.sleep(1.0)
        signal_at = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, server.log
        exited_after = time.monotonic() - signal_at
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert exited_after < 10
    assert "grace period over: cancelling" in server.log, server.log  # 8 calls for 2 threads outlast 50 ms
    assert {o[1] for o in outcomes} <= {"OK", "UNAVAILABLE"}, outcomes
    # The calls cut off end UNAVAILABLE (the server closes its connections): a status clients retry.
    assert any("Socket closed" in o[2] for o in outcomes), outcomes
