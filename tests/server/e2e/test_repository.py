"""The repository at run time: nothing outside it is ever read, and models load, reload and unload
while traffic flows without a failed call (KServe's RepositoryModelLoad/Unload, --model-control)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import onnx
import onnx_ir as ir
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from graphgen.build import BuildOptions, build
from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import classifier_pb2_grpc, kserve_v2_pb2_grpc
from graphgen_protos import kserve_v2_pb2 as kpb
from tests.support.server import ServerProcess, add_model

TINY = dict(resolution=32, num_classes=10)
BATCH = np.random.default_rng(3).standard_normal((2, 3, 32, 32), dtype=np.float32)
TRAFFIC_THREADS = 4
PAUSE_S = 0.4  # traffic between two repository changes


def _tiny(repository, name: str, version: int, seed: int):
    return add_model(repository, "efficientnet_lite0", name=name, version=version, seed=seed, **TINY)


def _with_external_data(path, location: str) -> None:
    """The tiny model with its weights in a file beside it, re-pointed at ``location``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ir.save(build("efficientnet_lite0", BuildOptions(**TINY)), path, external_data="weights.bin")
    proto = onnx.load(str(path), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(path))


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """A repository beside an ``outside`` directory that holds a servable model and a secret."""
    base = tmp_path_factory.mktemp("base")
    repository, outside = base / "repository", base / "outside"
    _tiny(repository, "tiny", 1, seed=0)
    _tiny(outside, "stolen", 1, seed=0)
    (outside / "secret.bin").write_bytes(b"\0" * 64)
    (repository / "linked").symlink_to(outside / "stolen")  # a whole model directory pointing out
    (repository / "tiny" / "7").symlink_to(outside / "stolen" / "1")  # one version pointing out
    _with_external_data(repository / "external" / "1" / "model.onnx", "../../../outside/secret.bin")
    return repository, outside


@pytest.fixture(scope="module")
def server(layout):
    with ServerProcess(layout[0], ["--model-control"]) as process:
        yield process


@pytest.fixture(scope="module")
def stubs(server):
    with grpc.insecure_channel(server.address) as channel:
        yield classifier_pb2_grpc.ClassifierStub(channel), kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)


def _status(call, request) -> tuple[str, str]:
    try:
        call(request, timeout=60)
    except grpc.RpcError as error:
        return error.code().name, error.details() or ""
    return "OK", ""


def _index(kserve) -> dict[tuple[str, str], kpb.RepositoryIndexResponse.ModelIndex]:
    return {(m.name, m.version): m for m in kserve.RepositoryIndex(kpb.RepositoryIndexRequest(), timeout=30).models}


def test_files_leading_outside_are_listed_not_ready_and_never_served(stubs, layout):
    classifier, kserve = stubs
    index = _index(kserve)
    assert index[("tiny", "1")].state == "READY"
    for key in [("linked", "1"), ("tiny", "7")]:
        assert index[key].state == "UNAVAILABLE" and "leads outside the repository" in index[key].reason, index[key]
    assert "external data outside the model's directory" in index[("external", "1")].reason
    tensor = cpb.Tensor(shape=BATCH.shape, data=BATCH.tobytes())
    # A version named that is not ready: UNAVAILABLE; no version named and none ready: NOT_FOUND (Triton's answers).
    cases = [("linked", "", "NOT_FOUND", "no ready version"), ("tiny", "7", "UNAVAILABLE", "not ready")]
    for model, version, expected, words in [*cases, ("external", "", "NOT_FOUND", "no ready version")]:
        code, details = _status(classifier.Classify, cpb.ClassifyRequest(model=model, version=version, tensor=tensor))
        assert code == expected and words in details, (model, details)


NAMES = ["../outside/stolen", "..", ".", "/etc", "tiny/../../outside/stolen", "tiny/1", "..\\stolen", "a\0b", ".hidden"]


@pytest.mark.parametrize("name", NAMES)
def test_names_in_requests_reach_nothing_outside(stubs, layout, name):
    classifier, kserve = stubs
    absolute = str(layout[1] / "stolen") if name == "/etc" else name  # an absolute path to a real model
    tensor = cpb.Tensor(shape=BATCH.shape, data=BATCH.tobytes())
    code, _ = _status(classifier.Classify, cpb.ClassifyRequest(model=absolute, tensor=tensor))
    assert code == "NOT_FOUND"
    code, details = _status(kserve.RepositoryModelLoad, kpb.RepositoryModelLoadRequest(model_name=absolute))
    assert code == "INVALID_ARGUMENT" and details.startswith("model_name:"), details
    code, details = _status(kserve.RepositoryModelUnload, kpb.RepositoryModelUnloadRequest(model_name=absolute))
    assert code == "INVALID_ARGUMENT" and details.startswith("model_name:"), details


def test_loading_a_model_whose_files_lead_outside_is_refused(stubs):
    _, kserve = stubs
    code, details = _status(kserve.RepositoryModelLoad, kpb.RepositoryModelLoadRequest(model_name="linked"))
    assert code == "FAILED_PRECONDITION" and "leads outside the repository" in details
    code, details = _status(kserve.RepositoryModelLoad, kpb.RepositoryModelLoadRequest(model_name="external"))
    assert code == "FAILED_PRECONDITION" and "outside the model's directory" in details
    assert _index(kserve)[("linked", "1")].state == "UNAVAILABLE"


def test_load_calls_take_no_file_overrides_and_one_repository(stubs):
    _, kserve = stubs
    request = kpb.RepositoryModelLoadRequest(model_name="tiny")
    request.parameters["file:1/model.onnx"].bytes_param = b"\x08\x07"  # Triton uploads files this way
    assert _status(kserve.RepositoryModelLoad, request)[0] == "INVALID_ARGUMENT"
    request = kpb.RepositoryModelLoadRequest(model_name="tiny", repository_name="/tmp")
    assert _status(kserve.RepositoryModelLoad, request)[0] == "NOT_FOUND"
    assert _status(kserve.RepositoryModelLoad, kpb.RepositoryModelLoadRequest(model_name="absent"))[0] == "NOT_FOUND"


def test_model_control_is_off_by_default(layout):
    with ServerProcess(layout[0]) as server, grpc.insecure_channel(server.address) as channel:
        kserve = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        code, details = _status(kserve.RepositoryModelLoad, kpb.RepositoryModelLoadRequest(model_name="tiny"))
        assert code == "FAILED_PRECONDITION" and "--model-control" in details
        metadata = kserve.ServerMetadata(kpb.ServerMetadataRequest(), timeout=30)
        assert "model_repository" not in metadata.extensions


class Traffic:
    """Threads sending ModelInfer for the newest ``tiny`` until stopped; every answer is checked."""

    def __init__(self, address: str, expected: dict[str, list[np.ndarray]]) -> None:
        self.address, self.expected = address, expected  # version -> the logits each of its files gives
        self.answers: list[str] = []  # the version that answered
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(TRAFFIC_THREADS)]

    def _run(self) -> None:
        request = kpb.ModelInferRequest(model_name="tiny")
        request.inputs.add(name="input", datatype="FP32", shape=BATCH.shape)
        request.raw_input_contents.append(BATCH.tobytes())
        with grpc.insecure_channel(self.address) as channel:
            stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(100_000):  # bounded; stopped long before
                if self._stop.is_set():
                    return
                try:
                    answer = stub.ModelInfer(request, timeout=60)
                except grpc.RpcError as error:
                    self.failures.append(f"{error.code().name}: {error.details()}")
                    continue
                logits = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(2, 10)
                known = self.expected.get(answer.model_version, [])
                if not any(np.allclose(logits, e, rtol=1e-5, atol=1e-5) for e in known):
                    self.failures.append(f"version {answer.model_version}: logits of no file of it")
                self.answers.append(answer.model_version)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_for(self, version: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.answers)
        while version not in self.answers[start:] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert version in self.answers[start:], f"version {version} never answered"


def test_versions_load_reload_and_unload_under_traffic_without_a_failed_call(tmp_path, ort_cpu):
    repository = tmp_path / "repository"
    files = {seed: _tiny(tmp_path / "built", f"s{seed}", 1, seed=seed) for seed in (0, 1, 2)}
    logits = {seed: ort_cpu(path).run(None, {"input": BATCH})[0] for seed, path in files.items()}

    def place(version: int, seed: int) -> None:
        target = repository / "tiny" / str(version) / "model.onnx"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[seed], target.with_suffix(".tmp"))
        target.with_suffix(".tmp").replace(target)  # whole files only, as a deployment would

    place(1, seed=0)
    _tiny(repository, "other", 1, seed=0)
    expected = {"1": [logits[0]], "2": [logits[1], logits[2]]}
    with ServerProcess(repository, ["--model-control"]) as server, grpc.insecure_channel(server.address) as channel:
        kserve = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)

        def load(name: str = "tiny") -> None:
            kserve.RepositoryModelLoad(kpb.RepositoryModelLoadRequest(model_name=name), timeout=120)
            time.sleep(PAUSE_S)

        with Traffic(server.address, expected) as traffic:
            traffic.wait_for("1")
            place(2, seed=1)
            load()  # a new version: the newest now answers
            traffic.wait_for("2")
            shutil.rmtree(repository / "tiny" / "1")
            load()  # version 1 left the disk: unloaded once its calls finished
            place(2, seed=2)
            load()  # version 2's file changed: reloaded, the old copy closed after its calls
            kserve.RepositoryModelUnload(kpb.RepositoryModelUnloadRequest(model_name="other"), timeout=120)
            load("other")
            (repository / "tiny" / "3").mkdir()
            (repository / "tiny" / "3" / "model.onnx").write_bytes(b"\x08\x07not a model")
            code, details = _status(kserve.RepositoryModelLoad, kpb.RepositoryModelLoadRequest(model_name="tiny"))
            time.sleep(PAUSE_S)
        index = _index(kserve)
    assert traffic.failures == [], traffic.failures[:5]
    assert len(traffic.answers) > 100 and {"1", "2"} <= set(traffic.answers)
    assert code == "FAILED_PRECONDITION" and "version 3" in details  # a corrupt new version: the others serve
    assert index[("tiny", "3")].state == "UNAVAILABLE" and "failed to load" in index[("tiny", "3")].reason
    assert ("tiny", "1") not in index and index[("tiny", "2")].state == "READY"
    assert index[("other", "1")].state == "READY"
    closed = [line for line in server.log_lines if "closed (after" in line]
    assert len(closed) == 3, closed  # tiny v1, the first tiny v2, other v1
    assert "Traceback" not in server.log


TRITON_SCRIPT = r"""
import json, sys
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

client = triton.InferenceServerClient(sys.argv[1])
seen = {}
client.unload_model("tiny")
seen["after_unload"] = client.is_model_ready("tiny")
client.load_model("tiny")
seen["after_load"] = client.is_model_ready("tiny")
try:
    client.load_model("../outside")
except InferenceServerException as error:
    seen["traversal"] = [error.status(), error.message()]
print(json.dumps(seen))
"""


def test_tritonclient_loads_and_unloads(tmp_path):
    pytest.importorskip("tritonclient")
    _tiny(tmp_path, "tiny", 1, seed=0)
    with ServerProcess(tmp_path, ["--model-control"]) as server:
        with grpc.insecure_channel(server.address) as channel:  # the health service follows the models
            kserve, health = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel), health_pb2_grpc.HealthStub(channel)
            kserve.RepositoryModelUnload(kpb.RepositoryModelUnloadRequest(model_name="tiny"), timeout=60)
            unloaded = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            kserve.RepositoryModelLoad(kpb.RepositoryModelLoadRequest(model_name="tiny"), timeout=60)
            loaded = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        done = subprocess.run(
            [sys.executable, "-c", TRITON_SCRIPT, server.address], capture_output=True, text=True, timeout=120
        )
    assert (unloaded, loaded) == (health_pb2.HealthCheckResponse.NOT_SERVING, health_pb2.HealthCheckResponse.SERVING)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["after_unload"] is False and seen["after_load"] is True
    assert seen["traversal"][0] == "StatusCode.INVALID_ARGUMENT" and "not a model name" in seen["traversal"][1]
