"""Every client mistake gets its status code and a message naming the field; the server goes on."""

from __future__ import annotations

import grpc
import numpy as np
import onnx
import pytest

from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import classifier_pb2_grpc, kserve_v2_pb2_grpc
from graphgen_protos import kserve_v2_pb2 as kpb
from tests.server_helpers import ServerProcess, add_model, add_tiny_model, encode

INVALID, NOT_FOUND, EXHAUSTED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)
SIZE = 32  # the tiny model's input is [N, 3, 32, 32], 10 classes
LIMITS = ["--max-images", "8", "--max-queue", "6", "--max-image-pixels", "1000000", "--max-batch", "4"]


def _image(width: int = 40, height: int = 30) -> bytes:
    return encode(np.full((height, width, 3), 128, np.uint8), "PNG")


def _tensor(*shape: int, data: bytes | None = None) -> cpb.Tensor:
    array = np.zeros(shape, np.float32)
    return cpb.Tensor(shape=shape, data=array.tobytes() if data is None else data)


def _infer(name="input", datatype="FP32", shape=(1, 3, SIZE, SIZE), raw=None, model="tiny", outputs=(), **kw):
    request = kpb.ModelInferRequest(model_name=model, **kw)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(np.zeros(shape, np.float32).tobytes() if raw is None else raw)
    for output_name, k in outputs:
        out = request.outputs.add(name=output_name)
        if k is not None:
            out.parameters["classification"].int64_param = k
    return request


def _two_inputs():
    request = _infer()
    request.inputs.add(name="other", datatype="FP32", shape=[1])
    request.raw_input_contents.append(b"\0" * 4)
    return request


def _fp32_contents(count: int):
    request = kpb.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 3, SIZE, SIZE])
    tensor.contents.fp32_contents.extend([0.0] * count)
    return request


# (case, service, method, request, status, words the message must contain)
CASES = [
    ("unknown model", "c", "Classify", cpb.ClassifyRequest(model="nope", images=[_image()]), NOT_FOUND, "'nope'"),
    ("unknown version", "c", "Classify", cpb.ClassifyRequest(model="tiny", version="9", images=[_image()]), NOT_FOUND, "version '9'"),
    ("no model name", "c", "Classify", cpb.ClassifyRequest(images=[_image()]), INVALID, "model:"),
    ("nothing to classify", "c", "Classify", cpb.ClassifyRequest(model="tiny"), INVALID, "images:"),
    ("empty image", "c", "Classify", cpb.ClassifyRequest(model="tiny", images=[b""]), INVALID, "images[0]: image is empty"),
    ("corrupt image", "c", "Classify", cpb.ClassifyRequest(model="tiny", images=[b"GIF89a-nonsense"]), INVALID, "images[0]: image bytes could not be decoded"),
    ("second image corrupt", "c", "Classify", cpb.ClassifyRequest(model="tiny", images=[_image(), b"\xff\xd8\xff"]), INVALID, "images[1]"),
    ("image too large", "c", "Classify", cpb.ClassifyRequest(model="tiny", images=[_image(1100, 1000)]), INVALID, "images[0]: image is 1100x1000"),
    ("too many images", "c", "Classify", cpb.ClassifyRequest(model="tiny", images=[_image()] * 9), INVALID, "images: 9 images exceed"),
    ("top_k above classes", "c", "Classify", cpb.ClassifyRequest(model="tiny", images=[_image()], top_k=11), INVALID, "top_k: 11"),
    ("images and tensor", "c", "Classify", cpb.ClassifyRequest(model="tiny", images=[_image()], tensor=_tensor(1, 3, SIZE, SIZE)), INVALID, "images: send images or a tensor"),
    ("tensor byte count", "c", "Classify", cpb.ClassifyRequest(model="tiny", tensor=_tensor(1, 3, SIZE, SIZE, data=b"\0" * 12)), INVALID, "tensor.data: 12 bytes"),
    ("tensor spatial size", "c", "Classify", cpb.ClassifyRequest(model="tiny", tensor=_tensor(1, 3, 64, 64)), INVALID, "tensor: shape [1, 3, 64, 64] does not fit [N, 3, 32, 32] (axis 2)"),
    ("tensor rank", "c", "Classify", cpb.ClassifyRequest(model="tiny", tensor=_tensor(3, SIZE, SIZE)), INVALID, "tensor: shape [3, 32, 32] has rank 3"),
    ("tensor zero dim", "c", "Classify", cpb.ClassifyRequest(model="tiny", tensor=cpb.Tensor(shape=[0, 3, SIZE, SIZE])), INVALID, "tensor.shape"),
    ("fixed batch model", "c", "Classify", cpb.ClassifyRequest(model="fixed", tensor=_tensor(2, 3, SIZE, SIZE)), INVALID, "(axis 0)"),
    ("model without preprocessing", "c", "Classify", cpb.ClassifyRequest(model="plain", images=[_image()]), INVALID, "images: model plain has no graphgen preprocessing metadata"),
    ("a 6 MB message reaches the handler", "c", "Classify", cpb.ClassifyRequest(model="tiny", tensor=_tensor(1, 3, 700, 700)), INVALID, "does not fit [N, 3, 32, 32]"),
    ("queue cannot take it", "c", "Classify", cpb.ClassifyRequest(model="tiny", tensor=_tensor(7, 3, SIZE, SIZE)), EXHAUSTED, "queue full"),
    ("infer unknown model", "k", "ModelInfer", _infer(model="nope"), NOT_FOUND, "'nope'"),
    ("infer input name", "k", "ModelInfer", _infer(name="pixels"), INVALID, "inputs[0].name"),
    ("infer datatype", "k", "ModelInfer", _infer(datatype="INT64"), INVALID, "inputs[0].datatype"),
    ("infer byte count", "k", "ModelInfer", _infer(raw=b"\0" * 8), INVALID, "raw_input_contents[0]: 8 bytes"),
    ("infer shape", "k", "ModelInfer", _infer(shape=(1, 3, 16, 16)), INVALID, "inputs[0].shape"),
    ("infer two inputs", "k", "ModelInfer", _two_inputs(), INVALID, "inputs: model tiny takes 1 input"),
    ("infer value count", "k", "ModelInfer", _fp32_contents(5), INVALID, "inputs[0].contents.fp32_contents"),
    ("infer unknown output", "k", "ModelInfer", _infer(outputs=[("probabilities", None)]), INVALID, "outputs[0].name"),
    ("classification zero", "k", "ModelInfer", _infer(outputs=[("logits", 0)]), INVALID, "outputs[0].parameters.classification"),
    ("classification too many", "k", "ModelInfer", _infer(outputs=[("logits", 11)]), INVALID, "outputs[0].parameters.classification"),
    ("infer queue", "k", "ModelInfer", _infer(shape=(7, 3, SIZE, SIZE)), EXHAUSTED, "queue full"),
    ("metadata unknown version", "k", "ModelMetadata", kpb.ModelMetadataRequest(name="tiny", version="2"), NOT_FOUND, "version '2'"),
    ("ready unknown model", "k", "ModelReady", kpb.ModelReadyRequest(name="nope"), NOT_FOUND, "'nope'"),
    ("statistics unknown model", "k", "ModelStatistics", kpb.ModelStatisticsRequest(name="nope"), NOT_FOUND, "'nope'"),
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    add_model(repo, "efficientnet_lite0", name="fixed", resolution=SIZE, num_classes=10, batch=1)
    plain = add_tiny_model(repo, "plain")
    model = onnx.load(plain)
    del model.metadata_props[:]  # an ONNX file graphgen did not describe: tensors only
    onnx.save(model, plain)
    with ServerProcess(repo, LIMITS) as process:
        yield process


@pytest.fixture(scope="module")
def stubs(server):
    with grpc.insecure_channel(server.address) as channel:
        yield {
            "c": classifier_pb2_grpc.ClassifierStub(channel),
            "k": kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel),
        }


@pytest.mark.parametrize(
    ("service", "method", "request_", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_gets_its_status_and_names_the_field(stubs, service, method, request_, code, words):
    with pytest.raises(grpc.RpcError) as failure:
        getattr(stubs[service], method)(request_, timeout=30)
    assert failure.value.code() == code, failure.value.details()
    assert words in failure.value.details()


def test_the_server_still_answers_and_logged_no_internal_error(server, stubs):
    for case in CASES:  # the table once more, quickly, then valid calls
        with pytest.raises(grpc.RpcError):
            getattr(stubs[case[1]], case[2])(case[3], timeout=30)
    answer = stubs["c"].Classify(cpb.ClassifyRequest(model="tiny", images=[_image()], top_k=3), timeout=30)
    assert len(answer.results[0].classes) == 3 and answer.results[0].classes[0].label.startswith("class_")
    inferred = stubs["k"].ModelInfer(_infer(outputs=[("logits", 2)]), timeout=30)
    assert inferred.outputs[0].datatype == "BYTES" and list(inferred.outputs[0].shape) == [1, 2]
    plain = stubs["k"].ModelInfer(_infer(model="plain"), timeout=30)
    assert len(plain.raw_output_contents[0]) == 10 * 4
    stats = stubs["k"].ModelStatistics(kpb.ModelStatisticsRequest(name="tiny"), timeout=30).model_stats[0]
    assert stats.inference_stats.fail.count >= 20 and stats.inference_stats.success.count >= 2
    assert server.process.poll() is None
    assert "Traceback" not in server.log and "INTERNAL" not in server.log
