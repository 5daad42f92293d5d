"""Without CUDA, onnxruntime's "Failed to load libcublasLt.so.13 ..." lines stay out of the server's output.

They are simulated here (this machine's CUDA libraries load; its driver is what is missing):
onnxruntime's preload_dlls is replaced by one that prints what it prints where the libraries are
absent, and loading the CUDA provider's library fails the way it does there.
"""

from __future__ import annotations

import pytest

from graphgen_server.config import CudaOptions
from graphgen_server.core import providers

LINES = [
    f"Failed to load lib{name}.so.13: lib{name}.so.13: cannot open shared object file: No such file or directory"
    for name in ("cublasLt", "cublas", "cufft")
] + ["Please follow https://onnxruntime.ai/docs/install/#cuda-and-cudnn to install CUDA."]


@pytest.fixture
def no_cuda_libraries(monkeypatch):
    def preload_dlls(**kwargs):
        print("\n".join(LINES))

    def cdll(name, *args, **kwargs):
        raise OSError("libcublasLt.so.13: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: [providers.CUDA, providers.CPU])
    monkeypatch.setattr(providers.ort, "preload_dlls", preload_dlls)
    monkeypatch.setattr(providers.ctypes, "CDLL", cdll)
    providers._cuda_check.cache_clear()
    yield
    providers._cuda_check.cache_clear()  # the real answer again for later tests


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_auto_and_cpu_print_nothing_and_say_why_once(no_cuda_libraries, capfd, device):
    choice = providers.choose(device, CudaOptions())
    assert choice.providers == [providers.CPU]
    if device == "auto":
        assert choice.reason == "CUDA libraries not found (libcublasLt.so.13); running on CPU"
    out, err = capfd.readouterr()
    assert "Failed to load" not in out + err and "Please follow" not in out + err, (out, err)


def test_device_cuda_keeps_onnxruntime_s_lines_in_its_error(no_cuda_libraries, capfd):
    with pytest.raises(providers.DeviceError) as raised:
        providers.choose("cuda", CudaOptions())
    message = str(raised.value)
    assert message.startswith("--device cuda: CUDA libraries not found (libcublasLt.so.13)")
    assert all(line in message for line in LINES)  # asked for CUDA: every detail helps
    out, err = capfd.readouterr()
    assert not out and not err
