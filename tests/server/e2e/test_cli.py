"""graphgen-server's start-up: providers and why, and the mistakes that stop it with exit status 2."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from graphgen_server.config import CudaOptions
from graphgen_server.core import providers
from tests.support.server import ServerProcess, add_tiny_model

NO_CUDA = providers.cuda_unavailable_reason()


def _server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphgen_server", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    return repo


def test_cpu_is_chosen_on_request_and_when_cuda_cannot_run():
    assert providers.choose("cpu", CudaOptions()).providers == ["CPUExecutionProvider"]
    auto = providers.choose("auto", CudaOptions())
    if NO_CUDA is None:
        assert auto.wants_cuda and auto.providers[-1] == "CPUExecutionProvider"
    else:
        assert auto.providers == ["CPUExecutionProvider"]
        assert auto.reason.endswith("; running on CPU") and NO_CUDA in auto.reason
    with pytest.raises(ValueError, match="--device"):
        providers.choose("tpu", CudaOptions())


@pytest.mark.skipif(NO_CUDA is None, reason="a CUDA device is usable here")
def test_device_cuda_without_cuda_stops_with_the_reason(repository):
    done = _server("--repository", str(repository), "--device", "cuda", "--port", "0")
    assert done.returncode == 2
    assert "--device cuda:" in done.stderr and NO_CUDA in done.stderr and "Traceback" not in done.stderr


def test_missing_or_empty_repository_stops_with_a_message(tmp_path):
    missing = _server("--repository", str(tmp_path / "nowhere"), "--port", "0")
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    empty = _server("--repository", str(tmp_path), "--port", "0")
    assert empty.returncode == 2 and "graphgen build NAME --repository" in empty.stderr


def test_a_port_in_use_stops_with_a_message(repository):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _server("--repository", str(repository), "--port", str(taken.getsockname()[1]))
    assert done.returncode == 2 and "cannot listen on 127.0.0.1:" in done.stderr


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_one_log_line_per_model_says_which_provider_and_why(repository, device):
    with ServerProcess(repository, ["--device", device]) as server:
        pass
    assert server.returncode == 0
    lines = [line for line in server.log_lines if "model tiny v1:" in line]
    assert len(lines) == 1
    if device == "cpu":
        assert "CPUExecutionProvider (--device cpu)" in lines[0]
    elif NO_CUDA is not None:
        assert f"CPUExecutionProvider ({NO_CUDA}; running on CPU)" in lines[0]
        assert any(why in lines[0] for why in ("CUDA libraries not found", "no CUDA", "the CUDA runtime answered"))
    else:
        assert "CUDAExecutionProvider (" in lines[0] and "CUDA device(s) visible; GPU instances on" in lines[0]
    assert "[E:onnxruntime" not in server.log  # onnxruntime was never asked for a provider that cannot load
