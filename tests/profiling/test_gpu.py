"""GPU times on the CUDA execution provider: CUPTI per node, CUDA events per run, fp16 models.

Marked ``gpu`` and skipped where CUDA cannot run, or where the ``gpu`` extra (cupti-python,
cuda-bindings) is missing. The CPU side of all this (attribution of synthetic CUPTI records,
refusing CUDA graphs, launch-time notes) is tested in tests/profiling/test_summary.py and
tests/server/unit/test_profiling.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from graphgen.build import build, save
from graphgen.passes import to_fp16
from graphgen.profiling import cuda as gpu
from graphgen.profiling.session import CUDA, ModelProfiler
from graphgen_server.core.providers import cuda_unavailable_reason

NO_CUDA = cuda_unavailable_reason()
NO_CUPTI = gpu.cupti_unavailable_reason() or gpu.cuda_events_unavailable_reason()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(NO_CUDA is not None, reason=f"no usable CUDA: {NO_CUDA}"),
    pytest.mark.skipif(NO_CUPTI is not None, reason=f"no GPU timing: {NO_CUPTI}"),
]
DEVICE_MARGIN = 0.10  # per-node GPU times add up to the CUDA-event run time within 10% (GPU idle between kernels)


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    return save(build("resnet50"), tmp_path_factory.mktemp("models") / "resnet50.onnx")


def _profile(path, batch=8, runs=10, dtype=np.float32):
    profiler = ModelProfiler(path, [(CUDA, {"cudnn_conv_algo_search": "HEURISTIC"}), "CPUExecutionProvider"])
    try:
        session = profiler.build()
        assert session.provider == CUDA
        first = session.session.get_inputs()[0]
        shape = [batch, *first.shape[1:]]
        x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
        return session.measure({first.name: x}, runs)[1]
    finally:
        profiler.close()


def test_device_times_add_up_to_the_cuda_event_run_time(resnet50):
    profile = _profile(resnet50)
    assert profile.timing == "device" and profile.device_run is not None
    device_sum = sum(row.device.median for row in profile.rows if row.device)
    error = abs(device_sum - profile.device_run.median) / profile.device_run.median
    print(f"resnet50 b8: device rows {device_sum:.0f} µs, CUDA events {profile.device_run.median:.0f} µs ({error:.1%});"
          f" host launch {sum(r.time.median for r in profile.rows):.0f} µs; notes {profile.notes}")  # fmt: skip
    assert error <= DEVICE_MARGIN
    convs = [row for row in profile.rows if row.macs]
    assert convs and all(row.device and row.device.median > 0 for row in convs)


def test_launch_blocking_host_times_agree_on_the_top_layers(resnet50, tmp_path):
    """With CUDA_LAUNCH_BLOCKING=1 each launch waits for its kernel, so host times become GPU times."""
    command = [sys.executable, "-m", "graphgen", "profile", str(resnet50), "--batch", "8", "--device", "cuda", "--json"]
    blocking = subprocess.run(
        command, env={**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}, capture_output=True, text=True, check=True
    )
    host = {row["kernel"]: row["time"]["median"] for row in json.loads(blocking.stdout)["rows"]}
    profile = _profile(resnet50)
    device = {row.kernel: row.device.median for row in profile.rows if row.device}
    top_host = sorted(host, key=host.get, reverse=True)[:5]
    top_device = sorted(device, key=device.get, reverse=True)[:5]
    print(f"top-5 blocking host {top_host}\ntop-5 CUPTI device {top_device}")
    assert len(set(top_host) & set(top_device)) >= 3


def test_without_cupti_the_profile_says_it_reports_launch_times(resnet50, monkeypatch):
    monkeypatch.setattr(gpu, "cupti_unavailable_reason", lambda: "cupti-python is not installed (simulated)")
    profile = _profile(resnet50, batch=1, runs=3)
    assert profile.timing == "launch" and "LAUNCH TIME" in profile.timing_text
    assert any("launch times, not GPU times" in note for note in profile.notes)


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_fp16_models_are_profiled_on_the_gpu(tmp_path, keep_io_types):
    model = build("resnet50")
    path = save(to_fp16(model, keep_io_types=keep_io_types).model, tmp_path / "half.onnx")
    profile = _profile(path, dtype=np.float32 if keep_io_types else np.float16)
    assert profile.timing == "device" and not any("float32 between Casts" in note for note in profile.notes)
    assert all(row.device and row.device.median > 0 for row in profile.rows if row.macs)
    print(f"resnet50 fp16 (keep_io_types={keep_io_types}) b8: CUDA events {profile.device_run.median:.0f} µs")
