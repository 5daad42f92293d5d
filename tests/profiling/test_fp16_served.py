"""fp16 models (``graphgen convert --fp16`` with and without ``--keep-io-types``) served and profiled:
FP16 tensors in and out of ModelInfer with a profile, and Classify's profile of the float32-io form."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from graphgen.build import BuildOptions, build, save
from graphgen.passes import to_fp16
from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import classifier_pb2_grpc, kserve_v2_pb2_grpc
from graphgen_protos import kserve_v2_pb2 as kpb
from tests.support.server import ServerProcess

SIZE = 64


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    model = build("efficientnet_lite0", BuildOptions(resolution=SIZE, num_classes=10))
    for name, keep in (("half", False), ("half_io32", True)):
        save(to_fp16(model, keep_io_types=keep).model, repo / name / "1" / "model.onnx")
    with ServerProcess(repo) as process:
        yield process


def _mapped_convs(profile: cpb.Profile) -> list[cpb.LayerTime]:
    return [row for row in profile.layers if row.mapped and row.macs]


def test_fp16_tensors_in_and_out_of_model_infer_with_a_profile(server):
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float16)
    request = kpb.ModelInferRequest(model_name="half")
    request.inputs.add(name="input", datatype="FP16", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    request.parameters["profile"].bool_param = True
    request.parameters["profile_runs"].int64_param = 3
    with grpc.insecure_channel(server.address) as channel:
        response = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=300)
    assert response.outputs[0].datatype == "FP16" and list(response.outputs[0].shape) == [2, 10]
    logits = np.frombuffer(response.raw_output_contents[0], dtype="<f2")
    assert logits.shape == (20,) and np.isfinite(logits).all()
    profile = json_format.Parse(response.parameters["graphgen_profile"].string_param, cpb.Profile())
    assert profile.runs == 3 and profile.batch_size == 2
    convs = _mapped_convs(profile)
    assert len(convs) > 40  # the convolutions are named after graphgen's layers, fp16 or not
    assert any("float32 between Casts" in note for note in profile.notes)  # CPU: no float16 kernels, said so


def test_fp16_model_with_float32_io_is_profiled_through_classify(server):
    x = np.random.default_rng(1).standard_normal((1, 3, SIZE, SIZE), dtype=np.float32)
    request = cpb.ClassifyRequest(
        model="half_io32", tensor=cpb.Tensor(shape=x.shape, data=x.tobytes()), profile=True, profile_runs=3
    )
    with grpc.insecure_channel(server.address) as channel:
        response = classifier_pb2_grpc.ClassifierStub(channel).Classify(request, timeout=300)
    assert len(response.results[0].classes) == 5
    profile = response.profile
    assert profile.runs == 3 and len(_mapped_convs(profile)) > 40
    assert all(row.p10_us <= row.median_us <= row.p90_us for row in profile.layers)
