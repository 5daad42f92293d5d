"""Profiles on CUDA (graphgen/profiling/session.py) with the CUDA libraries and the CUDA session stood in for.

tests/support/fake_cuda.py simulates what a GPU run looks like from the host: CUPTI records of the input copy,
of one kernel launched at the very end of each node (where onnxruntime's µs floor bites) and of the output
copy, on a GPU timeline the double remembers. The real thing runs in tests/profiling/test_gpu.py.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from graphgen.build import BuildOptions, build, save
from graphgen.profiling import cuda
from graphgen.profiling.attribution import INPUT_COPY, OUTPUT_COPY
from graphgen.profiling.session import CUDA, ModelProfiler
from tests.support.fake_cuda import FakeCudaSession, FakeCupti, FakeRuntime, cuptiError, install

RUNS = 5


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save(build("resnet18", BuildOptions(resolution=32, num_classes=10)), tmp_path_factory.mktemp("m") / "r.onnx")


def _feeds(batch: int = 2) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(0).standard_normal((batch, 3, 32, 32), dtype=np.float32)}


def _profile(model_path, device_id: int = 0, runs: int = RUNS):
    profiler = ModelProfiler(model_path, [(CUDA, {"device_id": device_id}), "CPUExecutionProvider"])
    try:
        return profiler.build().measure(_feeds(), runs, warmup_runs=1)[1]
    finally:
        profiler.close()


def test_rows_are_gpu_times_with_the_copies_as_rows_and_the_run_is_its_cupti_span(monkeypatch, model_path):
    _, runtime = install(monkeypatch)
    gpu = FakeCudaSession.gpu
    assert gpu is not None
    profile = _profile(model_path)
    assert profile.timing == "device"
    kernels = [row for row in profile.rows if row.kernel not in (INPUT_COPY, OUTPUT_COPY)]
    assert kernels and all(row.device and row.device.median == gpu.kernel_ns / 1e3 for row in kernels), [
        (row.kernel, row.device) for row in kernels
    ]  # every launch in its node, the one at each node's very end included
    first, last = profile.rows[0], profile.rows[-1]
    assert (first.kernel, last.kernel) == (INPUT_COPY, OUTPUT_COPY)
    assert first.device.median == last.device.median == gpu.copy_ns / 1e3 and first.io_bytes == 2 * 3 * 32 * 32 * 4
    assert last.io_bytes == 2 * 10 * 4 and first.time.median > 0  # the host's time in the copy call
    spans = [(end - start) / 1e3 for _, start, end in gpu.spans[-RUNS:]]
    assert profile.device_run is not None and profile.device_run.median == pytest.approx(float(np.median(spans)))
    busy = (len(kernels) * gpu.kernel_ns + 2 * gpu.copy_ns) / 1e3
    assert profile.device_busy is not None and profile.device_busy.median == pytest.approx(busy)
    assert profile.layers_us == pytest.approx(busy)  # rows and copies add up to the busy time exactly
    assert profile.event_run is not None  # the CUDA-event cross-check, never the total
    assert any("0 of the runs' in none" in note for note in profile.notes), profile.notes
    options = FakeCudaSession.built[-1].cuda_options
    assert options is not None and int(options["user_compute_stream"]) > 0
    assert runtime.created_streams == [(0, runtime.cudaStreamNonBlocking)] and runtime.live == 0  # freed


def test_a_cupti_failure_falls_back_to_launch_times_and_the_next_profile_finishes(monkeypatch, model_path):
    fake, _ = install(monkeypatch)
    assert cuda.cupti_unavailable_reason() is None
    fake.fail["activity_enable"] = cuptiError("CUPTI_ERROR_NOT_INITIALIZED (15)")
    profile = _profile(model_path)
    assert profile.timing == "launch" and profile.device_run is None
    assert any("launch times, not GPU times: CUPTI failed to start" in note for note in profile.notes)
    fake.fail.clear()
    done: list = []
    thread = threading.Thread(target=lambda: done.append(_profile(model_path)), daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the second profile hung on CUPTI's lock"
    assert done[0].timing == "device"


def test_a_session_onnxruntime_built_on_cpu_says_so_and_has_no_gpu_figures(monkeypatch, model_path):
    _, runtime = install(monkeypatch)
    monkeypatch.setattr(FakeCudaSession, "mode", "silent-cpu")  # a CUDA library missing: CPU, whatever asked
    profile = _profile(model_path)
    assert profile.timing == "host" and profile.device_run is None and profile.event_run is None
    assert any("asked for CUDAExecutionProvider, onnxruntime built this session on CPU" in n for n in profile.notes)
    assert runtime.live == 0


def test_onnxruntimes_own_fallback_to_cpu_is_off_and_nothing_leaks(monkeypatch, model_path):
    _, runtime = install(monkeypatch)
    monkeypatch.setattr(FakeCudaSession, "mode", "raises")
    profiler = ModelProfiler(model_path, [(CUDA, {}), "CPUExecutionProvider"])
    try:
        with pytest.raises(RuntimeError, match="CUDA failure 35"):
            profiler.build()
    finally:
        profiler.close()
    assert FakeCudaSession.built == [] and runtime.live == 0  # enable_fallback=0, and the stream freed


def test_a_session_never_measured_frees_its_stream(monkeypatch, model_path):
    _, runtime = install(monkeypatch)
    profiler = ModelProfiler(model_path, [(CUDA, {}), "CPUExecutionProvider"])
    session = profiler.build()
    assert runtime.live == 3  # a stream and two events
    session.close()
    profiler.close()
    assert runtime.live == 0


def test_the_profile_runs_on_the_device_of_its_cuda_options(monkeypatch, model_path):
    _, runtime = install(monkeypatch, runtime=FakeRuntime(devices=2))
    _profile(model_path, device_id=1)
    assert runtime.created_streams == [(1, runtime.cudaStreamNonBlocking)]
    assert FakeCudaSession.built[-1].cuda_options["device_id"] == 1


def test_serving_launches_during_a_profile_are_left_out_of_its_rows(monkeypatch, model_path):
    install(monkeypatch, FakeCupti())
    gpu = FakeCudaSession.gpu
    assert gpu is not None
    import onnxruntime as ort

    serving = ort.InferenceSession(str(model_path), providers=[CUDA])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            serving.run(None, _feeds(1))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        profile = _profile(model_path)
    finally:
        stop.set()
        thread.join(30)
    kernels = [row for row in profile.rows if row.kernel not in (INPUT_COPY, OUTPUT_COPY)]
    assert all(row.device and row.device.median == gpu.kernel_ns / 1e3 for row in kernels)
    (note,) = [note for note in profile.notes if "launched by other threads" in note]
    assert "left out of the rows" in note


def test_graphgen_profile_on_cuda_takes_the_algorithm_search_and_reports_gpu_times(monkeypatch, capsys):
    import json

    from graphgen.cli import main

    install(monkeypatch)
    tiny = ["--resolution", "32", "--num-classes", "10", "--runs", "2", "--json"]
    assert main(["profile", "resnet18", *tiny, "--device", "cuda", "--cudnn-conv-algo-search", "HEURISTIC"]) == 0
    profile = json.loads(capsys.readouterr().out)
    assert profile["timing"] == "device" and profile["device_run_us"] and profile["device_busy_us"]
    assert [row["kernel"] for row in profile["rows"]][:: len(profile["rows"]) - 1] == [INPUT_COPY, OUTPUT_COPY]
    options = FakeCudaSession.built[-1].cuda_options
    assert options is not None and options["cudnn_conv_algo_search"] == "HEURISTIC"
