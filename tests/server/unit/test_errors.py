"""Every client mistake gets its status code and a message naming the field; the runtime goes on.

In-process: the real runtime over real models, its servicers called directly (no network, no
subprocess); the wire itself (oversize and undecodable messages) is exercised by
tests/server/e2e/test_fuzz.py against a server process.
"""

from __future__ import annotations

import logging

import grpc
import numpy as np
import onnx
import pytest

from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import kserve_v2_pb2 as kpb
from tests.support.server import Aborted, InProcessServer, add_model, add_tiny_model, encode

INVALID, NOT_FOUND, EXHAUSTED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)
SIZE = 32  # the tiny model's input is [N, 3, 32, 32], 10 classes
LIMITS = dict(max_images=8, max_queue=6, max_image_pixels=1_000_000, max_batch=4)


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


def _twice():
    request = _infer()
    request.inputs.add(name="input", datatype="FP32", shape=[1, 3, SIZE, SIZE])
    request.raw_input_contents.append(np.zeros((1, 3, SIZE, SIZE), np.float32).tobytes())
    return request


def _raw_entries():
    request = _infer()
    request.raw_input_contents.append(b"")
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
    ("corrupt image", "c", "Classify", cpb.ClassifyRequest(model="tiny", images=[b"GIF89a-nonsense"]), INVALID, "images[0]: not an image"),
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
    ("infer datatype", "k", "ModelInfer", _infer(datatype="INT64"), INVALID, "inputs[0].datatype: model tiny's input 'input' takes FP32, got 'INT64'"),
    ("infer bytes datatype", "k", "ModelInfer", _infer(datatype="BYTES"), INVALID, "inputs[0].datatype"),
    ("infer no model name", "k", "ModelInfer", _infer(model=""), INVALID, "model: no model name"),
    ("infer input twice", "k", "ModelInfer", _twice(), INVALID, "takes 1 input (input), got 2"),
    ("infer raw entries", "k", "ModelInfer", _raw_entries(), INVALID, "raw_input_contents: 2 entries for 1 inputs"),
    ("infer too many rows", "k", "ModelInfer", _infer(shape=(9, 3, SIZE, SIZE)), INVALID, "exceeds the limit of 8"),
    ("infer unknown version", "k", "ModelInfer", _infer(model_version="4"), NOT_FOUND, "version '4'"),
    ("infer byte count", "k", "ModelInfer", _infer(raw=b"\0" * 8), INVALID, "raw_input_contents[0]: 8 bytes"),
    ("infer shape", "k", "ModelInfer", _infer(shape=(1, 3, 16, 16)), INVALID, "inputs[0].shape"),
    ("infer two inputs", "k", "ModelInfer", _two_inputs(), INVALID, "inputs: model tiny takes 1 input"),
    ("infer value count", "k", "ModelInfer", _fp32_contents(5), INVALID, "inputs[0].contents.fp32_contents"),
    ("infer unknown output", "k", "ModelInfer", _infer(outputs=[("probabilities", None)]), INVALID, "outputs[0].name"),
    ("classification zero", "k", "ModelInfer", _infer(outputs=[("logits", 0)]), INVALID, "outputs[0].parameters.classification"),
    ("classification too many", "k", "ModelInfer", _infer(outputs=[("logits", 11)]), INVALID, "outputs[0].parameters.classification"),
    ("infer queue", "k", "ModelInfer", _infer(shape=(7, 3, SIZE, SIZE)), EXHAUSTED, "queue full"),
    ("metadata unknown version", "k", "ModelMetadata", kpb.ModelMetadataRequest(name="tiny", version="2"), NOT_FOUND, "version '2'"),
    ("metadata unknown model", "k", "ModelMetadata", kpb.ModelMetadataRequest(name="nope"), NOT_FOUND, "'nope'"),
]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    add_model(repo, "efficientnet_lite0", name="fixed", resolution=SIZE, num_classes=10, batch=1)
    plain = add_tiny_model(repo, "plain")
    model = onnx.load(plain)
    del model.metadata_props[:]  # an ONNX file graphgen did not describe: tensors only
    onnx.save(model, plain)
    server = InProcessServer(repo, **LIMITS)
    yield server
    server.close()


@pytest.mark.parametrize(
    ("service", "method", "request_", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_gets_its_status_and_names_the_field(served, service, method, request_, code, words):
    with pytest.raises(Aborted) as failure:
        served.call(service, method, request_)
    assert failure.value.code == code, failure.value.details
    assert words in failure.value.details


def test_the_runtime_still_answers_and_logged_no_internal_error(served, caplog):
    runtime = served.runtime
    with caplog.at_level(logging.DEBUG, logger="graphgen_server"):
        for case in CASES:  # the table once more, then valid calls
            with pytest.raises(Aborted):
                served.call(case[1], case[2], case[3])
    answer = served.call("c", "Classify", cpb.ClassifyRequest(model="tiny", images=[_image()], top_k=3))
    assert len(answer.results[0].classes) == 3 and answer.results[0].classes[0].label.startswith("class_")
    inferred = served.call("k", "ModelInfer", _infer(outputs=[("logits", 2)]))
    assert inferred.outputs[0].datatype == "BYTES" and list(inferred.outputs[0].shape) == [1, 2]
    plain = served.call("k", "ModelInfer", _infer(model="plain"))
    assert len(plain.raw_output_contents[0]) == 10 * 4
    stats = runtime.find("tiny").stats.snapshot()
    assert stats.fail.count >= 20 and stats.success.count >= 2
    assert stats.failures["REJECTED"] >= 2  # the queue-full cases, as Triton labels them
    assert all(m.pending_rows == 0 for m in runtime.all())  # every refusal gave its rows back
    assert "Traceback" not in caplog.text and "INTERNAL" not in caplog.text


def test_listeners_hear_every_finished_request(served):
    runtime = served.runtime
    heard = []
    runtime.listeners.append(lambda model, record: heard.append((model.name, record.ok, record.failure, record.rows)))
    try:
        served.call("k", "ModelInfer", _infer(shape=(2, 3, SIZE, SIZE)))
        with pytest.raises(Aborted):
            served.call("k", "ModelInfer", _infer(datatype="INT8"))
    finally:
        runtime.listeners.clear()
    assert heard == [("tiny", True, "", 2), ("tiny", False, "OTHER", 0)]
