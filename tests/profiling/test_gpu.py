"""GPU times on the CUDA execution provider: CUPTI per node and per run, CUDA events beside them, fp16 models.

Marked ``gpu`` and skipped where CUDA cannot run, or where the ``gpu`` extra (cupti-python, cuda-bindings)
cannot start (both are probed by really starting them). Each test runs under a watchdog: a hang (a CUPTI
lock left held, a wedged device) ends the run with every thread's traceback and a non-zero exit instead of
stalling it (``make gpu-check`` has minutes, not hours). The CPU side of all this runs everywhere, through
stand-ins for the CUDA libraries: tests/profiling/test_cuda.py, test_session_cuda.py, test_attribution.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from graphgen.build import save
from graphgen.passes import to_fp16
from graphgen.profiling import cuda as gpu
from graphgen.profiling.attribution import INPUT_COPY, OUTPUT_COPY
from graphgen.profiling.session import CUDA, ModelProfiler
from graphgen_server.core.providers import cuda_unavailable_reason
from tests.support.gpu import hang_guard
from tests.support.models import built

NO_CUDA = cuda_unavailable_reason()
NO_CUPTI = None if NO_CUDA else gpu.cupti_unavailable_reason() or gpu.cuda_runtime_unavailable_reason()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(NO_CUDA is not None, reason=f"no usable CUDA: {NO_CUDA}"),
    pytest.mark.skipif(NO_CUPTI is not None, reason=f"no GPU timing: {NO_CUPTI}"),
]
DEVICE_MARGIN = 0.10  # rows (copies included) add up to the CUPTI run span within 10% (GPU idle between kernels)
SEARCH = "HEURISTIC"  # one cuDNN algorithm choice for every profile compared here (EXHAUSTIVE times candidates)


@pytest.fixture(autouse=True)
def _watchdog():
    with hang_guard(240):
        yield


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    return save(built("resnet50"), tmp_path_factory.mktemp("models") / "resnet50.onnx")


def _profile(path, batch=8, runs=10, dtype=np.float32, device_id=0):
    options = {"cudnn_conv_algo_search": SEARCH, "device_id": device_id}
    profiler = ModelProfiler(path, [(CUDA, options), "CPUExecutionProvider"])
    try:
        session = profiler.build()
        assert session.provider == CUDA
        first = session.session.get_inputs()[0]
        shape = [batch, *first.shape[1:]]
        x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
        return session.measure({first.name: x}, runs)[1]
    finally:
        profiler.close()


def test_device_rows_add_up_to_the_cupti_run_span(resnet50):
    profile = _profile(resnet50)
    assert profile.timing == "device" and profile.device_run is not None and profile.device_busy is not None
    error = abs(profile.layers_us - profile.device_run.median) / profile.device_run.median
    print(
        f"resnet50 b8: rows {profile.layers_us:.0f} µs, CUPTI span {profile.device_run.median:.0f} µs ({error:.1%}), "
        f"busy {profile.device_busy.median:.0f} µs, CUDA events {profile.event_run.median if profile.event_run else 0:.0f}"
        f" µs; host launch {sum(r.time.median for r in profile.rows):.0f} µs; notes {profile.notes}"
    )
    assert error <= DEVICE_MARGIN
    assert profile.device_busy.median <= profile.device_run.median * 1.0001
    convs = [row for row in profile.rows if row.macs]
    assert convs and all(row.device and row.device.median > 0 for row in convs)
    copies = {row.kernel: row for row in profile.rows if row.kernel in (INPUT_COPY, OUTPUT_COPY)}
    assert set(copies) == {INPUT_COPY, OUTPUT_COPY}, [row.kernel for row in profile.rows[:3]]
    assert copies[INPUT_COPY].io_bytes == 8 * 3 * 224 * 224 * 4


def test_launch_blocking_host_times_agree_on_the_top_layers(resnet50):
    """With CUDA_LAUNCH_BLOCKING=1 each launch waits for its kernel, so host times become GPU times."""
    command = [sys.executable, "-m", "graphgen", "profile", str(resnet50), "--batch", "8", "--device", "cuda"]
    command += ["--json", "--cudnn-conv-algo-search", SEARCH]  # the same algorithms as _profile's
    env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}
    blocking = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=180)
    host = {row["kernel"]: row["time"]["median"] for row in json.loads(blocking.stdout)["rows"]}
    profile = _profile(resnet50)
    device = {row.kernel: row.device.median for row in profile.rows if row.device and row.macs}
    top_host = sorted((k for k in host if k in device), key=host.get, reverse=True)[:5]
    top_device = sorted(device, key=device.get, reverse=True)[:5]
    print(f"top-5 blocking host {top_host}\ntop-5 CUPTI device {top_device}")
    assert len(set(top_host) & set(top_device)) >= 3


def test_without_cupti_the_profile_says_it_reports_launch_times(resnet50, monkeypatch):
    monkeypatch.setattr(gpu, "cupti_unavailable_reason", lambda: "cupti-python is not installed (simulated)")
    profile = _profile(resnet50, batch=1, runs=3)
    assert profile.timing == "launch" and "LAUNCH TIME" in profile.timing_text and profile.device_run is None
    assert any("launch times, not GPU times" in note for note in profile.notes)


def test_a_second_profile_after_a_cupti_failure_finishes(resnet50, monkeypatch):
    def broken(self):
        raise gpu.CudaError("CUPTI failed to start (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(gpu.CuptiCollector, "start", broken)
        assert _profile(resnet50, batch=1, runs=2).timing == "launch"
    assert _profile(resnet50, batch=1, runs=2).timing == "device"


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_fp16_models_are_profiled_on_the_gpu(tmp_path, keep_io_types):
    model = built("resnet50")
    path = save(to_fp16(model, keep_io_types=keep_io_types).model, tmp_path / "half.onnx")
    dtype = np.float32 if keep_io_types else np.float16
    profile = _profile(path, dtype=dtype)
    assert profile.timing == "device" and not any("float32 between Casts" in note for note in profile.notes)
    assert all(row.device and row.device.median > 0 for row in profile.rows if row.macs)
    (copy,) = [row for row in profile.rows if row.kernel == INPUT_COPY]
    assert copy.io_bytes == 8 * 3 * 224 * 224 * np.dtype(dtype).itemsize  # fp16 IO: half the bytes copied
    assert profile.device_run is not None
    print(f"resnet50 fp16 (keep_io_types={keep_io_types}) b8: CUPTI span {profile.device_run.median:.0f} µs")


def test_a_profile_on_the_last_visible_device(resnet50):
    from cuda.bindings import runtime

    count = gpu.check(runtime.cudaGetDeviceCount(), "cudaGetDeviceCount")
    profile = _profile(resnet50, batch=1, runs=3, device_id=count - 1)
    assert profile.timing == "device" and profile.device_run is not None
