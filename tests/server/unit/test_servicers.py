"""The servicers in-process, against a fake runtime: protobuf in → the runtime's call, its result → protobuf.

No server, no model: each test calls a servicer method with a fake context and checks what the
runtime was asked for and what the client gets back, and that each failure the runtime raises
ends the call with its status code.
"""

from __future__ import annotations

import asyncio
import struct

import grpc
import numpy as np
import pytest

from graphgen.preprocess import ImageError
from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import kserve_v2_pb2 as kpb
from graphgen_server.core.api import Classified, ClassScore, Inferred, OutputTensor, Runtime, Timings
from graphgen_server.core.errors import InvalidArgument, ModelUnavailable, NotFound, QueueFull, Refused
from graphgen_server.core.requests import Profiling, to_array
from graphgen_server.core.runtime import LocalRuntime
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.grpc_classify import ClassifierServicer
from graphgen_server.frontends.grpc_kserve import KServeServicer
from graphgen_server.frontends.grpc_wire import Undecodable
from graphgen_server.frontends.status import http_status_of
from tests.support.server import Aborted, FakeContext, as_sent

TIMINGS = Timings(queue_s=0.001, input_s=0.002, infer_s=0.003, output_s=0.004, total_s=0.010, batch_size=2)


class FakeRuntime:
    """A :class:`Runtime` holding no model: records each call; answers with ``result`` or raises ``error``."""

    def __init__(self, result=None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.calls: list[tuple[str, tuple, dict]] = []

    async def _answer(self, method: str, args: tuple, kwargs: dict):
        self.calls.append((method, args, kwargs))
        if self.error is not None:
            raise self.error
        return self.result

    def all(self) -> list:
        return []

    def find(self, name: str, version: str = ""):
        self.calls.append(("find", (name, version), {}))
        raise self.error or NotFound(f"model {name!r} is not in the repository")

    ready = find

    def versions(self, name: str) -> list[str]:
        return self.find(name)

    async def statistics(self, name: str = "", version: str = "") -> list:
        return [self.find(name, version)] if name else []

    def refused(self, name: str, version: str, error: BaseException) -> None:
        self.calls.append(("refused", (name, version, type(error).__name__), {}))

    async def classify(self, *args, **kwargs):
        return await self._answer("classify", args, kwargs)

    async def infer(self, *args, **kwargs):
        return await self._answer("infer", args, kwargs)


def test_the_fake_runtimes_and_the_real_one_are_runtimes():
    """The servicers are typed against the Runtime protocol: the fakes here must implement all of it."""
    from tests.server.unit.test_http_routes import FakeRuntime as HttpFakeRuntime

    assert (
        issubclass(LocalRuntime, Runtime) and issubclass(FakeRuntime, Runtime) and issubclass(HttpFakeRuntime, Runtime)
    )

    class Partial:  # (the check can fail: a runtime without infer is none)
        all, find, ready, versions, classify = FakeRuntime.all, FakeRuntime.find, FakeRuntime.ready, None, None

    assert not issubclass(Partial, Runtime)


def call(servicer, method: str, request):
    return as_sent(method, asyncio.run(getattr(servicer, method)(request, FakeContext())))


def status(servicer, method: str, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(Aborted) as aborted:
        call(servicer, method, request)
    return aborted.value.code, aborted.value.details


def kserve(runtime: FakeRuntime) -> KServeServicer:
    return KServeServicer(runtime, CallGate())  # type: ignore[arg-type]


def test_model_infer_hands_raw_inputs_over_and_sends_every_output_type_back():
    inferred = Inferred(
        "m",
        "3",
        [
            OutputTensor("half", "FP16", np.array([[1.5, -2.0]], np.float16)),
            OutputTensor("flags", "BOOL", np.array([True, False, True])),
            OutputTensor("top", "BYTES", np.array([[b"0.9:1:cat", b"0.1:0"]], dtype=object)),
        ],
        TIMINGS,
        None,
    )
    runtime = FakeRuntime(inferred)
    request = kpb.ModelInferRequest(model_name="m", model_version="3", id="r7")
    request.inputs.add(name="a", datatype="FP16", shape=[1, 2])
    request.inputs.add(name="b", datatype="INT64", shape=[3])
    request.raw_input_contents.extend([np.array([[1, 2]], "<f2").tobytes(), np.arange(3, dtype="<i8").tobytes()])
    request.outputs.add(name="top").parameters["classification"].int64_param = 2
    request.outputs.add(name="half")
    response = call(kserve(runtime), "ModelInfer", request)

    ((method, args, kwargs),) = runtime.calls
    assert (method, args) == ("infer", ("m", "3"))
    a, b = kwargs["inputs"]
    assert (a.name, a.datatype, tuple(a.shape), a.field, a.data_field) == (
        "a",
        "FP16",
        (1, 2),
        "inputs[0]",
        "raw_input_contents[0]",
    )
    assert (b.name, b.datatype, b.data_field) == ("b", "INT64", "raw_input_contents[1]")
    np.testing.assert_array_equal(to_array(b), np.arange(3))
    assert [(o.name, o.field, o.classification) for o in kwargs["outputs"]] == [
        ("top", "outputs[0]", 2),
        ("half", "outputs[1]", None),
    ]

    assert (response.model_name, response.model_version, response.id) == ("m", "3", "r7")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("half", "FP16", [1, 2]),
        ("flags", "BOOL", [3]),
        ("top", "BYTES", [1, 2]),
    ]
    half, flags, top = response.raw_output_contents
    np.testing.assert_array_equal(np.frombuffer(half, "<f2"), [1.5, -2.0])
    assert flags == b"\x01\x00\x01"
    assert top == struct.pack("<I", 9) + b"0.9:1:cat" + struct.pack("<I", 5) + b"0.1:0"


@pytest.mark.parametrize(
    ("datatype", "field", "values"),
    [
        ("FP32", "fp32_contents", [0.5, 1.5]),
        ("INT64", "int64_contents", [-3, 4]),
        ("UINT8", "uint_contents", [7, 8]),
        ("BOOL", "bool_contents", [True, False]),
        ("FP64", "fp64_contents", [1e300, 2.0]),
        ("INT8", "int_contents", [-1, 1]),
    ],
)
def test_typed_contents_are_read_from_the_datatypes_own_field(datatype, field, values):
    runtime = FakeRuntime(Inferred("m", "1", [], TIMINGS, None))
    request = kpb.ModelInferRequest(model_name="m")
    getattr(request.inputs.add(name="x", datatype=datatype, shape=[2]).contents, field).extend(values)
    call(kserve(runtime), "ModelInfer", request)
    (tensor,) = runtime.calls[0][2]["inputs"]
    assert tensor.data_field == f"inputs[0].contents.{field}"
    np.testing.assert_array_equal(to_array(tensor), np.array(values))


def test_raw_contents_not_one_per_input_are_refused_after_the_names_are_checked():
    runtime = FakeRuntime(Inferred("m", "1", [], TIMINGS, None))
    request = kpb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1])
    request.raw_input_contents.extend([b"\0" * 4, b"\0" * 4])
    call(kserve(runtime), "ModelInfer", request)
    (tensor,) = runtime.calls[0][2]["inputs"]
    with pytest.raises(InvalidArgument, match=r"raw_input_contents: 2 entries for 1 inputs"):
        to_array(tensor)


@pytest.mark.parametrize(
    ("setter", "expected"),
    [
        (lambda p: setattr(p, "int64_param", 3), 3),
        (lambda p: setattr(p, "bool_param", True), True),
        (lambda p: setattr(p, "string_param", "3"), "3"),
        (lambda p: None, "nothing"),
    ],
)
def test_the_classification_parameter_reaches_the_runtime_as_sent(setter, expected):
    runtime = FakeRuntime(Inferred("m", "1", [], TIMINGS, None))
    request = kpb.ModelInferRequest(model_name="m")
    setter(request.outputs.add(name="y").parameters["classification"])
    call(kserve(runtime), "ModelInfer", request)
    assert runtime.calls[0][2]["outputs"][0].classification == expected


def test_classify_hands_images_or_a_tensor_over_and_answers_classes_and_timings():
    classified = Classified("m", "2", "CPUExecutionProvider", [[ClassScore(4, "cat", 0.75)]], TIMINGS, None)
    runtime = FakeRuntime(classified)
    servicer = ClassifierServicer(runtime, CallGate())  # type: ignore[arg-type]
    response = call(servicer, "Classify", cpb.ClassifyRequest(model="m", images=[b"png"], top_k=0))
    _, args, kwargs = runtime.calls[0]
    assert args == ("m", "") and kwargs["images"] == [b"png"] and kwargs["tensor"] is None
    assert kwargs["top_k"] == 5 and kwargs["profile"] == Profiling(False, 0)  # 0 means 5
    assert [(c.index, c.label, c.score) for c in response.results[0].classes] == [(4, "cat", 0.75)]
    t = response.timings
    assert (t.queue_us, t.preprocess_us, t.inference_us, t.postprocess_us, t.total_us, t.batch_size) == (
        1000,
        2000,
        3000,
        4000,
        10000,
        2,
    )

    data = np.ones((1, 3, 2, 2), "<f4").tobytes()
    call(
        servicer, "Classify", cpb.ClassifyRequest(model="m", tensor=cpb.Tensor(shape=[1, 3, 2, 2], data=data), top_k=1)
    )
    tensor = runtime.calls[1][2]["tensor"]
    assert tensor.name is None and tensor.datatype == "FP32" and tensor.data_field == "tensor.data"
    assert tensor.fit_field == "tensor" and to_array(tensor).shape == (1, 3, 2, 2)


FAILURES = [
    (NotFound("model 'x' is not in the repository"), grpc.StatusCode.NOT_FOUND, 404),
    (InvalidArgument("inputs[0].shape", "bad"), grpc.StatusCode.INVALID_ARGUMENT, 400),
    (QueueFull("queue full"), grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (Refused("model control is off"), grpc.StatusCode.FAILED_PRECONDITION, 400),
    (ModelUnavailable("not ready"), grpc.StatusCode.UNAVAILABLE, 503),
    (ImageError("image is empty"), grpc.StatusCode.INVALID_ARGUMENT, 400),
    (RuntimeError("onnxruntime exploded at 0x7f"), grpc.StatusCode.INTERNAL, 500),
]


@pytest.mark.parametrize(("error", "code", "http"), FAILURES, ids=[type(f[0]).__name__ for f in FAILURES])
def test_each_failure_of_the_runtime_ends_the_call_with_its_status(error, code, http):
    for servicer, method, request in [
        (kserve(FakeRuntime(error=error)), "ModelInfer", kpb.ModelInferRequest(model_name="m")),
        (ClassifierServicer(FakeRuntime(error=error), CallGate()), "Classify", cpb.ClassifyRequest(model="m")),  # type: ignore[arg-type]
    ]:
        got, details = status(servicer, method, request)
        assert got == code
        if code is grpc.StatusCode.INTERNAL:
            assert "0x7f" not in details and "server log" in details  # internals stay in the log
        else:
            assert str(error) in details
    assert http_status_of(error)[0] == http


def test_an_undecodable_request_and_a_closed_gate_get_their_status():
    servicer = kserve(FakeRuntime())
    code, details = status(servicer, "ModelInfer", Undecodable("inference.ModelInferRequest", ValueError("truncated")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid inference.ModelInferRequest" in details
    asyncio.run(servicer.gate.close(0.1))
    code, details = status(servicer, "ModelInfer", kpb.ModelInferRequest(model_name="m"))
    assert code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details
    assert servicer.runtime.calls == []


def test_model_control_is_refused_while_off_and_checks_its_parameters():
    servicer = kserve(FakeRuntime())
    code, details = status(servicer, "RepositoryModelLoad", kpb.RepositoryModelLoadRequest(model_name="m"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "--model-control" in details
