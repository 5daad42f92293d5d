"""CUPTI and CUDA events (graphgen/profiling/cuda.py) against stand-ins for cupti-python and cuda-bindings.

The real modules are installed here too (the test extra has the gpu extra) and fail as they do on a machine
without a GPU: the probes must say so rather than pass an import-only check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

from graphgen.profiling import cuda
from graphgen.profiling.attribution import ApiCall, GpuActivity
from tests.support.fake_cuda import (
    ActivityKind,
    CudaError,
    FakeCupti,
    FakeRuntime,
    NotSupportedError,
    cuptiError,
    install,
)


def _finishes(work, timeout_s: float = 10.0) -> None:
    """Run ``work`` on a thread: a hang (a lock left held) fails the test instead of stalling the run."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), "hung: a CUPTI lock was left held"
    if errors:
        raise errors[0]


def test_the_real_modules_without_a_driver_are_reported_unavailable():
    pytest.importorskip("cupti")
    pytest.importorskip("cuda.bindings")
    from graphgen_server.core.providers import cuda_unavailable_reason

    if cuda_unavailable_reason() is None:
        pytest.skip("a GPU is usable here: tests/profiling/test_gpu.py covers it")
    reason = cuda.cupti_unavailable_reason()
    assert reason is not None and "CUPTI cannot start here" in reason  # imports fine, then NotSupportedError
    events = cuda.cuda_runtime_unavailable_reason()
    assert events is not None and "cudaError" in events  # the runtime's own status, e.g. cudaErrorInsufficientDriver


@pytest.mark.parametrize(
    ("failing", "error", "said"),
    [
        ("get_timestamp", NotSupportedError("CUDA driver is not found (libcuda.so.1)"), "NotSupportedError"),
        ("activity_enable", cuptiError("CUPTI_ERROR_NOT_INITIALIZED (15)"), "cuptiError"),
        ("activity_register_callbacks", cuptiError("CUPTI_ERROR_INSUFFICIENT_PRIVILEGES (35)"), "PRIVILEGES"),
    ],
)
def test_availability_is_probed_by_starting_cupti(monkeypatch, failing, error, said):
    fake, _ = install(monkeypatch, FakeCupti(fail={failing: error}), session=False)
    reason = cuda.cupti_unavailable_reason()
    assert reason is not None and said in reason and "CUPTI cannot start here" in reason
    assert cuda._CUPTI_LOCK.acquire(blocking=False), "the probe left CUPTI's lock held"
    cuda._CUPTI_LOCK.release()
    fake.fail.clear()
    assert cuda.cupti_unavailable_reason() == reason  # probed once per process


def test_a_working_cupti_probes_available_and_registers_once(monkeypatch):
    fake, _ = install(monkeypatch, session=False)
    assert cuda.cupti_unavailable_reason() is None
    with cuda.CuptiCollector():
        pass
    assert fake.calls.count("activity_register_callbacks") == 1 and fake.enabled == set()


def test_a_cupti_failure_while_starting_releases_everything_and_the_next_collection_finishes(monkeypatch):
    fake, _ = install(monkeypatch, FakeCupti(fail={"get_timestamp": NotSupportedError("driver gone")}), session=False)
    collector = cuda.CuptiCollector()
    with pytest.raises(cuda.CudaError, match=r"CUPTI failed to start.*NotSupportedError: driver gone"):
        collector.start()
    assert fake.enabled == set()  # the kinds enabled before the failure are disabled again
    fake.fail.clear()

    def second() -> None:
        with cuda.CuptiCollector() as again:
            fake.launch(42, "kernel", "sgemm", fake.now(), fake.now() + 1000, 5000)
        assert [a.name for a in again.records.activities] == ["sgemm"]

    _finishes(second)


def test_stop_never_raises_and_always_releases(monkeypatch):
    fake, _ = install(monkeypatch, session=False)
    collector = cuda.CuptiCollector()
    collector.start()
    fake.fail["activity_flush_all"] = cuptiError("CUPTI_ERROR_UNKNOWN (999)")
    failure = collector.stop()
    assert failure is not None and "CUPTI failed to deliver its records" in failure and "cuptiError" in failure
    fake.fail.clear()
    _finishes(lambda: cuda.CuptiCollector().__enter__().stop())


def test_records_kept_are_the_timed_ones_with_copies_named_and_drops_counted(monkeypatch):
    fake, _ = install(monkeypatch, FakeCupti(dropped=3), session=False)
    with cuda.CuptiCollector() as collector:
        fake.launch(42, "kernel", "sgemm", 100, 200, 60)
        fake.launch(42, "memcpy", "HTOD", 300, 400, 10)
        fake.launch(42, "memset", "memset", 500, 600, 1)
        fake.record(
            types.SimpleNamespace(kind=ActivityKind.CONCURRENT_KERNEL, correlation_id=9, start=0, end=700, name="x"),
            types.SimpleNamespace(kind=ActivityKind.RUNTIME, correlation_id=9, thread_id=42, start=650, end=0),
        )
    records = collector.records
    assert records.calls == [ApiCall(1, 42, 100, 900), ApiCall(2, 42, 300, 1100), ApiCall(3, 42, 500, 1300)]
    assert records.activities == [
        GpuActivity(1, 200, 260, "sgemm", "kernel", ""),
        GpuActivity(2, 400, 410, "HTOD", "memcpy", "HTOD"),
        GpuActivity(3, 600, 601, "memset", "memset", ""),
    ]
    assert records.incomplete == 2 and records.dropped == 3 and records.offset_bracket_ns >= 0


def test_the_event_timer_makes_a_non_blocking_stream_and_frees_it(monkeypatch):
    _, runtime = install(monkeypatch, runtime=FakeRuntime(devices=2), session=False)
    timer = cuda.EventTimer(1)
    assert runtime.created_streams == [(1, runtime.cudaStreamNonBlocking)]  # not ordered with the legacy stream
    assert int(timer.stream_handle) in runtime.streams and timer.time(lambda: None) >= 0
    timer.close()
    timer.close()  # idempotent
    assert runtime.live == 0


def test_a_failed_event_timer_leaks_nothing_and_names_the_status(monkeypatch):
    _, runtime = install(
        monkeypatch, runtime=FakeRuntime(fail={"cudaEventCreate": CudaError.cudaErrorMemoryAllocation}), session=False
    )
    with pytest.raises(cuda.CudaError, match=r"cudaEventCreate failed: cudaErrorMemoryAllocation \(2\)"):
        cuda.EventTimer(0)
    assert runtime.created_streams and runtime.live == 0


def test_a_too_old_driver_is_not_reported_as_no_device(monkeypatch):
    runtime = FakeRuntime(fail={"cudaGetDeviceCount": CudaError.cudaErrorInsufficientDriver}, driver_version=12040)
    install(monkeypatch, runtime=runtime, session=False)
    reason = cuda.cuda_runtime_unavailable_reason()
    assert reason is not None and "cudaErrorInsufficientDriver (35)" in reason
    assert "driver: CUDA 12.4; runtime: CUDA 13.0" in reason and "no CUDA device" not in reason


def test_the_gpu_tests_watchdog_turns_a_hang_into_a_failure(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(
        "import threading\nfrom tests.support.gpu import hang_guard\n"
        "with hang_guard(0.5):\n    lock = threading.Lock()\n    lock.acquire()\n    lock.acquire()\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 1 and "Timeout" in done.stderr and "hang.py" in done.stderr
