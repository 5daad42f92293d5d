"""GPU instances (server core: instances, loaded, device_io, providers) with the CUDA libraries stood in for.

tests/support/fake_cuda.py gives 1 or 2 fake devices, an InferenceSession double "on CUDA" whose device buffers
are host memory (so the bytes really travel through the copies) and a CUDA runtime that counts streams,
buffers and copies. What a real GPU says is in tests/server/e2e/test_gpu.py (marked gpu).
"""

from __future__ import annotations

import numpy as np
import pytest

from graphgen_protos import model_config_pb2 as mc
from graphgen_server.config import CudaOptions, ServerConfig
from graphgen_server.core import providers
from graphgen_server.core.loaded import load_version
from graphgen_server.repository.model_config import ConfigError, plan_model
from tests.support.fake_cuda import CUDA, REAL_SESSION, FakeCudaSession, FakeRuntime, MemcpyKind, install
from tests.support.server import add_tiny_model

GPU_CHOICE = providers.ProviderChoice([(CUDA, CudaOptions().provider_options()), providers.CPU], "fake CUDA")
FEEDS = {"input": np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)}


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("repository")
    add_tiny_model(root)
    return root


def _load(repository, config: str, monkeypatch, devices: int = 2, device: str = "cuda", **cuda):
    install(monkeypatch, runtime=FakeRuntime(devices=devices))
    monkeypatch.setattr(providers, "visible_devices", lambda: devices)
    (repository / "tiny" / "config.pbtxt").write_text(config)
    ((file, settings),) = plan_model(repository, "tiny")
    server = ServerConfig(repository=repository, device=device, cuda=CudaOptions(**cuda))
    choice = GPU_CHOICE if device == "cuda" else providers.ProviderChoice([providers.CPU], "--device cpu")
    return load_version(file, settings, server, choice)


def _runtime() -> FakeRuntime:
    import sys

    return sys.modules["cuda.bindings.runtime"]  # type: ignore[return-value]


def _device_ids() -> list[str]:
    return [str((s.cuda_options or {}).get("device_id")) for s in FakeCudaSession.built if s.cuda_options is not None]


def test_kind_gpu_without_gpus_puts_count_instances_on_every_visible_device(repository, monkeypatch):
    loaded = _load(repository, "instance_group [ { count: 2, kind: KIND_GPU } ]", monkeypatch)
    assert len(loaded.instances) == 4 and [i.gpu for i in loaded.instances] == [0, 0, 1, 1]
    assert sorted(_device_ids()[:4]) == ["0", "0", "1", "1"]  # the four sessions, before the profiler's
    (group,) = loaded.config.instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_GPU and list(group.gpus) == [0, 1] and group.count == 2
    loaded.close()


def test_device_id_names_the_gpu_of_groups_that_list_none(repository, monkeypatch):
    loaded = _load(repository, "instance_group [ { count: 1, kind: KIND_GPU } ]", monkeypatch, device_id=1)
    assert [i.gpu for i in loaded.instances] == [1]
    loaded.close()


def test_a_gpu_that_is_not_visible_is_refused_by_name(repository, monkeypatch):
    with pytest.raises(ConfigError, match=r"lists gpus \[3\], but 2 CUDA device\(s\) are visible"):
        _load(repository, "instance_group [ { kind: KIND_GPU, gpus: [ 0, 3 ] } ]", monkeypatch)


def test_a_model_on_gpu_1_is_profiled_on_gpu_1(repository, monkeypatch):
    loaded = _load(repository, "instance_group [ { kind: KIND_GPU, gpus: [ 1 ] } ]", monkeypatch)
    runtime = _runtime()
    done = loaded.profiler.run(FEEDS, 3)
    assert done.profile.timing == "device" and done.profile.device_run is not None
    assert FakeCudaSession.built[-1].cuda_options["device_id"] == "1"  # the profiling session's
    assert runtime.created_streams[-1] == (1, runtime.cudaStreamNonBlocking)  # its timer's stream, on device 1
    assert loaded.profiler._spare is not None
    loaded.profiler._spare.result(timeout=60)  # the next profiling session, built ahead with a stream of its own
    loaded.close()
    assert runtime.live == 0  # that one's too


def test_a_kind_cpu_model_is_profiled_on_the_cpu_and_accelerators_are_kept(repository, monkeypatch):
    config = """instance_group [ { count: 1, kind: KIND_CPU } ]
optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }"""
    monkeypatch.setattr(
        providers.ort, "get_available_providers", lambda: ["OpenVINOExecutionProvider", CUDA, "CPUExecutionProvider"]
    )
    loaded = _load(repository, config, monkeypatch)
    assert loaded.profiler._core.providers == [("OpenVINOExecutionProvider", {}), providers.CPU]
    assert not any(s.cuda_options is not None for s in FakeCudaSession.built)
    loaded.close()


def test_a_session_built_on_cpu_although_cuda_was_asked_is_refused(repository, monkeypatch):
    install(monkeypatch)
    monkeypatch.setattr(FakeCudaSession, "mode", "silent-cpu")
    with pytest.raises(
        providers.FellBack, match="asked for CUDAExecutionProvider, onnxruntime built the session on CPU"
    ):
        _load_keeping(repository, "instance_group [ { kind: KIND_GPU } ]", monkeypatch)
    assert _runtime().live == 0  # the instances' streams built before the refusal are freed


def _load_keeping(repository, config, monkeypatch):
    """_load without a fresh install() (the test set the double's mode)."""
    monkeypatch.setattr(providers, "visible_devices", lambda: 1)
    (repository / "tiny" / "config.pbtxt").write_text(config)
    ((file, settings),) = plan_model(repository, "tiny")
    return load_version(file, settings, ServerConfig(repository=repository, device="cuda"), GPU_CHOICE)


def test_onnxruntimes_own_fallback_is_off(repository, monkeypatch):
    install(monkeypatch)
    monkeypatch.setattr(FakeCudaSession, "mode", "raises")
    with pytest.raises(RuntimeError, match="CUDA failure 35"):
        _load_keeping(repository, "instance_group [ { kind: KIND_GPU } ]", monkeypatch)


def test_each_gpu_instance_runs_on_its_own_stream_with_device_side_io_binding(repository, monkeypatch):
    loaded = _load(repository, "instance_group [ { count: 2, kind: KIND_GPU, gpus: [ 0 ] } ]", monkeypatch)
    runtime = _runtime()
    streams = [int(i.stream.handle) for i in loaded.instances if i.stream is not None]
    assert len(set(streams)) == 2 and all(runtime.streams[s] == runtime.cudaStreamNonBlocking for s in streams)
    sessions = [s for s in FakeCudaSession.built if s.cuda_options is not None][:2]
    assert [int(s.cuda_options["user_compute_stream"]) for s in sessions] == streams  # each computes on its own
    instance = loaded.instances[1]
    runtime.copies.clear()
    outputs, _ = loaded.run_sync(instance, FEEDS)
    expected = REAL_SESSION(str(repository / "tiny" / "1" / "model.onnx"), providers=[providers.CPU]).run(None, FEEDS)[
        0
    ]
    np.testing.assert_allclose(outputs[0], expected, rtol=1e-5, atol=1e-5)
    own = int(instance.stream.handle)
    assert runtime.copies == [(MemcpyKind.cudaMemcpyHostToDevice, own), (MemcpyKind.cudaMemcpyDeviceToHost, own)]
    assert runtime.synchronized[-1] == own
    (options,) = instance.session.run_options[-1:]
    assert options.get_run_config_entry("disable_synchronize_execution_providers") == "1"  # returns once queued
    loaded.close()
    assert runtime.live == 0  # streams and device buffers freed with the version


def test_without_cuda_bindings_instances_bind_from_host_memory_and_say_so(repository, monkeypatch, caplog):
    from graphgen.profiling import cuda as gpu

    install(monkeypatch)
    monkeypatch.setattr(gpu, "cuda_runtime_unavailable_reason", lambda: "cuda-bindings is not installed (simulated)")
    with caplog.at_level("INFO", logger="graphgen_server"):
        loaded = _load_keeping(repository, "instance_group [ { kind: KIND_GPU } ]", monkeypatch)
    assert loaded.instances[0].stream is None and loaded.instances[0].io_binding
    assert "no CUDA stream of its own per instance (cuda-bindings is not installed (simulated))" in caplog.text
    loaded.close()


def test_a_too_old_driver_is_named_not_taken_for_no_device(monkeypatch):
    class Runtime:  # libcudart through ctypes, as providers asks it
        def cudaGetDeviceCount(self, count):
            return 35

        class cudaGetErrorName:
            restype = None

            def __new__(cls, status):
                return b"cudaErrorInsufficientDriver"

        class cudaGetErrorString:
            restype = None

            def __new__(cls, status):
                return b"CUDA driver version is insufficient for CUDA runtime version"

        def cudaDriverGetVersion(self, version):
            version._obj.value = 12040  # ctypes.byref(c_int)
            return 0

    monkeypatch.setattr(providers.ctypes, "CDLL", lambda name: Runtime())
    providers._cuda_devices.cache_clear()
    try:
        count, status = providers._cuda_devices()
    finally:
        providers._cuda_devices.cache_clear()
    assert count == 0 and status.startswith("cudaErrorInsufficientDriver (35): CUDA driver version is insufficient")
    assert status.endswith("(driver: CUDA 12.4)")
