"""Stand-ins for the CUDA libraries, so the CUDA paths are tested on a machine without a GPU.

* :class:`FakeCupti`: cupti-python's ``cupti.cupti`` module as graphgen uses it (activity kinds, buffer
  callbacks, enable/disable/flush, the clock, dropped records), with failures to inject by function name,
  raised as cupti-python raises them (``NotSupportedError`` is a RuntimeError, ``cuptiError`` is not).
* :class:`FakeRuntime`: cuda-bindings' ``cuda.bindings.runtime`` (``(status, value)`` results, streams and
  events counted so a leak shows, statuses to inject per call, a device count, the driver's version).
* :class:`FakeCudaSession`: an ``onnxruntime.InferenceSession`` double for the CUDA provider. Outputs come
  from the real CPU session; a run is simulated as a GPU run would look from the host: the input copy, then
  each kernel of the optimised graph as a node event (written to the trace as onnxruntime writes it, ``ts``
  and ``dur`` floored to the µs) that launches its GPU work at the very end of the node, then the output
  copy. The launches and the GPU work go to the fake CUPTI (when its kinds are enabled), on a simulated GPU
  timeline whose spans the double remembers. ``mode`` says what the CUDA provider does at build: work,
  fail silently (a missing library: onnxruntime runs on CPU even with ``enable_fallback=0``) or raise
  (then onnxruntime's Python layer falls back to CPU unless ``enable_fallback=0``).

:func:`install` puts the fakes in ``sys.modules`` and resets graphgen's per-process CUDA caches.
"""

from __future__ import annotations

import ctypes
import enum
import functools
import itertools
import json
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import onnxruntime as ort

REAL_SESSION = ort.InferenceSession
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
OFFSET_NS = 7_000_000_000  # the fake CUPTI clock runs this far ahead of the wall clock


class NotSupportedError(RuntimeError):
    """As ``cupti._internal.utils.NotSupportedError`` (no driver)."""


class cuptiError(Exception):
    """As ``cupti.cupti.cuptiError`` (a CUPTI status)."""


class ActivityKind(enum.IntEnum):
    MEMCPY = 1
    MEMSET = 2
    KERNEL = 3
    DRIVER = 4
    RUNTIME = 5
    CONCURRENT_KERNEL = 10


class ActivityMemcpyKind(enum.IntEnum):
    UNKNOWN = 0
    HTOD = 1
    DTOH = 2
    DTOD = 8


@dataclass
class Launch:
    """What the double asked the fake GPU to do, for the tests to compare with the profile."""

    run_thread: int
    family: str
    name: str
    call_start_ns: int
    gpu_start_ns: int
    gpu_end_ns: int


class FakeCupti:
    """``cupti.cupti``: records are kept while their kinds are enabled and delivered by a flush."""

    ActivityKind = ActivityKind
    ActivityMemcpyKind = ActivityMemcpyKind
    ActivityThreadIdType = types.SimpleNamespace(DEFAULT=0, SYSTEM=1)
    cuptiError = cuptiError

    def __init__(self, fail: dict[str, BaseException] | None = None, dropped: int = 0) -> None:
        self.fail = dict(fail or {})  # function name -> exception it raises
        self.dropped = dropped
        self.enabled: set[int] = set()
        self.pending: list[Any] = []
        self.completed: Callable[[list], None] | None = None
        self.calls: list[str] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.launches: list[Launch] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def set_thread_id_type(self, kind: int) -> None:
        self._call("set_thread_id_type")

    def activity_register_callbacks(self, requested: Callable[[], tuple[int, int]], completed) -> None:
        self._call("activity_register_callbacks")
        assert requested()[0] > 0
        self.completed = completed

    def activity_enable(self, kind: int) -> None:
        self._call("activity_enable")
        self.enabled.add(int(kind))

    def activity_disable(self, kind: int) -> None:
        self._call("activity_disable")
        self.enabled.discard(int(kind))

    def activity_flush_all(self, flag: int) -> None:
        self._call("activity_flush_all")
        with self._lock:
            delivered, self.pending = self.pending, []
        if delivered and self.completed is not None:
            self.completed(delivered)

    def get_timestamp(self) -> int:
        self._call("get_timestamp")
        return time.time_ns() + OFFSET_NS

    def activity_get_num_dropped_records(self, context: int, stream_id: int, dropped: int) -> None:
        self._call("activity_get_num_dropped_records")
        ctypes.c_size_t.from_address(dropped).value = self.dropped

    # What the doubles do on the "GPU".
    def now(self) -> int:
        return time.time_ns() + OFFSET_NS

    def record(self, *records: Any) -> None:
        with self._lock:
            self.pending.extend(records)

    def launch(self, thread: int, family: str, name: str, call_ns: int, gpu_start_ns: int, gpu_ns: int) -> int:
        """One API call at ``call_ns`` (CUPTI clock) and the GPU work it queued; the work's end."""
        correlation = next(self._ids)
        end = gpu_start_ns + gpu_ns
        self.launches.append(Launch(thread, family, name, call_ns, gpu_start_ns, end))
        api = ActivityKind.RUNTIME
        kind = {"kernel": ActivityKind.CONCURRENT_KERNEL, "memset": ActivityKind.MEMSET}.get(
            family, ActivityKind.MEMCPY
        )
        records = []
        if int(api) in self.enabled:
            records.append(
                types.SimpleNamespace(
                    kind=api, correlation_id=correlation, thread_id=thread, start=call_ns, end=call_ns + 800
                )
            )
        if int(kind) in self.enabled:
            copy = {"HTOD": ActivityMemcpyKind.HTOD, "DTOH": ActivityMemcpyKind.DTOH}.get(name, 0)
            records.append(
                types.SimpleNamespace(
                    kind=kind, correlation_id=correlation, start=gpu_start_ns, end=end, name=name, copy_kind=copy
                )
            )
        self.record(*records)
        return end


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101


ERROR_TEXT = {
    CudaError.cudaErrorInsufficientDriver: b"CUDA driver version is insufficient for CUDA runtime version",
    CudaError.cudaErrorNoDevice: b"no CUDA-capable device is detected",
    CudaError.cudaErrorMemoryAllocation: b"out of memory",
}


class MemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3


class FakeRuntime:
    """``cuda.bindings.runtime``: every call answers ``(status, value…)``; streams, events and memory are counted.

    Device memory is host memory here (``cudaMalloc`` hands out the address of a numpy buffer), so copies
    really move the bytes and a run through device buffers computes what the model computes.
    """

    cudaError_t = CudaError
    cudaMemcpyKind = MemcpyKind
    cudaStreamDefault = 0
    cudaStreamNonBlocking = 1

    def __init__(self, devices: int = 1, fail: dict[str, CudaError] | None = None, driver_version: int = 13000) -> None:
        self.devices = devices
        self.fail = dict(fail or {})
        self.driver_version = driver_version
        self.streams: dict[int, int] = {}  # live handle -> flags
        self.events: set[int] = set()
        self.created_streams: list[tuple[int, int]] = []  # (device, flags) of every stream made
        self.device = 0
        self._handles = itertools.count(0x7F00_0000)
        self._recorded: dict[int, float] = {}
        self.memory: dict[int, Any] = {}  # device pointer -> the numpy buffer behind it
        self.copies: list[tuple[MemcpyKind, int]] = []  # (kind, stream) of every cudaMemcpyAsync
        self.synchronized: list[int] = []  # streams synchronised, in order

    def _status(self, name: str) -> CudaError:
        return self.fail.get(name, CudaError.cudaSuccess)

    def cudaGetDeviceCount(self):
        status = self._status("cudaGetDeviceCount")
        return (status, self.devices if status == 0 else 0)

    def cudaDriverGetVersion(self):
        return (CudaError.cudaSuccess, self.driver_version)

    def cudaRuntimeGetVersion(self):
        return (CudaError.cudaSuccess, 13000)

    def cudaGetErrorString(self, status):
        return (CudaError.cudaSuccess, ERROR_TEXT.get(status, b"unknown error"))

    def cudaSetDevice(self, device: int):
        status = self._status("cudaSetDevice")
        if status == 0 and not 0 <= device < self.devices:
            status = CudaError.cudaErrorInvalidDevice
        if status == 0:
            self.device = device
        return (status,)

    def cudaStreamCreateWithFlags(self, flags: int):
        status = self._status("cudaStreamCreateWithFlags")
        if status:
            return (status, None)
        handle = next(self._handles)
        self.streams[handle] = flags
        self.created_streams.append((self.device, flags))
        return (status, handle)

    def cudaStreamDestroy(self, stream: int):
        del self.streams[stream]
        return (CudaError.cudaSuccess,)

    def cudaEventCreate(self):
        status = self._status("cudaEventCreate")
        if status:
            return (status, None)
        handle = next(self._handles)
        self.events.add(handle)
        return (status, handle)

    def cudaEventDestroy(self, event: int):
        self.events.remove(event)
        return (CudaError.cudaSuccess,)

    def cudaEventRecord(self, event: int, stream: int):
        assert event in self.events and stream in self.streams
        self._recorded[event] = time.perf_counter()
        return (self._status("cudaEventRecord"),)

    def cudaEventSynchronize(self, event: int):
        return (CudaError.cudaSuccess,)

    def cudaEventElapsedTime(self, start: int, end: int):
        return (CudaError.cudaSuccess, (self._recorded[end] - self._recorded[start]) * 1e3)

    def cudaMalloc(self, size: int):
        import numpy as np

        status = self._status("cudaMalloc")
        if status:
            return (status, None)
        buffer = np.zeros(size, np.uint8)
        self.memory[buffer.ctypes.data] = buffer
        return (status, buffer.ctypes.data)

    def cudaFree(self, pointer: int):
        del self.memory[pointer]
        return (CudaError.cudaSuccess,)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: MemcpyKind, stream: int):
        assert stream in self.streams, "a copy on a stream that is not (or no longer) there"
        ctypes.memmove(dst, src, count)
        self.copies.append((MemcpyKind(kind), stream))
        return (self._status("cudaMemcpyAsync"),)

    def cudaStreamSynchronize(self, stream: int):
        assert stream in self.streams
        self.synchronized.append(stream)
        return (CudaError.cudaSuccess,)

    @property
    def live(self) -> int:
        """Streams, events and device buffers not freed: 0 when nothing leaked."""
        return len(self.streams) + len(self.events) + len(self.memory)


@dataclass
class Gpu:
    """The fake GPU's timeline, shared by every double of a test (one device's work queue)."""

    cupti: FakeCupti
    clock_ns: int = 0
    kernel_ns: int = 15_000
    copy_ns: int = 4_000
    node_host_ns: int = 20_000
    spans: list[tuple[int, int, int]] = field(default_factory=list)  # per simulated run: thread, GPU start, end
    lock: threading.Lock = field(default_factory=threading.Lock)  # serving and profiling doubles share it

    def queue(self, thread: int, family: str, name: str, ns: int, call_ns: int | None = None) -> int:
        with self.lock:
            call = self.cupti.now() if call_ns is None else call_ns
            start = max(self.clock_ns, call + 3_000)  # the GPU starts the work a little after its launch
            self.clock_ns = self.cupti.launch(thread, family, name, call, start, ns)
            return start


class FakeCudaSession:
    """An InferenceSession double "on CUDA": real CPU outputs, a simulated GPU run, an onnxruntime-like trace."""

    gpu: Gpu | None = None  # set by install()
    mode = "works"  # works | silent-cpu | raises
    built: ClassVar[list[FakeCudaSession]] = []  # every double made, for the tests to look at

    def __init__(self, path: str, sess_options=None, providers=None, provider_options=None, **kwargs: Any) -> None:
        self.asked = list(providers or [CPU])
        self.enable_fallback = int(kwargs.get("enable_fallback", 1))
        self.cuda_options = next((dict(p[1]) for p in self.asked if isinstance(p, tuple) and p[0] == CUDA), None)
        if self.cuda_options is None and CUDA in self.asked:
            self.cuda_options = {}
        on_cuda = self.cuda_options is not None and self.mode == "works"
        if self.cuda_options is not None and self.mode == "raises":
            if not self.enable_fallback:
                raise RuntimeError(
                    "[ONNXRuntimeError] : 1 : FAIL : CUDA failure 35: CUDA driver version is insufficient"
                )
            print("EP Error … Falling back to ['CPUExecutionProvider'] and retrying.")  # as onnxruntime does
        self._providers = [CUDA, CPU] if on_cuda else [CPU]
        self.on_cuda = on_cuda
        profiling = bool(sess_options is not None and sess_options.enable_profiling)
        self._prefix = sess_options.profile_file_prefix if profiling else ""
        if sess_options is not None and on_cuda:
            sess_options.enable_profiling = False  # the double writes the trace itself
        self._real = REAL_SESSION(path, sess_options, providers=[CPU])  # on CPU: the real session, trace and all
        if sess_options is not None:
            sess_options.enable_profiling = profiling
        self._kernels = self._kernel_list(path) if on_cuda else []
        self._profiling_start_ns = time.time_ns()
        self._events: list[dict] = []
        self.run_options: list[Any] = []  # of each run_with_iobinding
        FakeCudaSession.built.append(self)

    def _kernel_list(self, path: str) -> list[dict]:
        """The optimised graph's kernels as onnxruntime's own trace names them (from one real profiled run)."""
        import numpy as np

        options = ort.SessionOptions()
        options.enable_profiling = True
        options.log_severity_level = 3
        options.profile_file_prefix = str(Path(path).parent / "fake-cuda-kernels")
        probe = REAL_SESSION(path, options, providers=[CPU])
        feeds = {}
        for meta in probe.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in meta.shape]
            dtype = np.float16 if meta.type == "tensor(float16)" else np.float32
            feeds[meta.name] = np.zeros(shape, dtype)
        probe.run(None, feeds)
        trace = Path(probe.end_profiling())
        events = json.loads(trace.read_text())
        trace.unlink()
        return [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]

    def get_providers(self) -> list[str]:
        return list(self._providers)

    def __getattr__(self, name: str) -> Any:  # get_modelmeta and the rest: the real session's
        if name == "_real":
            raise AttributeError(name)
        return getattr(self._real, name)

    def io_binding(self) -> FakeBinding:
        return FakeBinding()

    def run_with_iobinding(self, binding: FakeBinding, run_options=None) -> None:
        """Inputs read where they were bound (device buffers are host memory here), outputs left "on the device"."""
        import numpy as np

        self.run_options.append(run_options)
        feeds = dict(binding.host_inputs)
        for name, (dtype, shape, pointer) in binding.inputs.items():
            nbytes = int(np.prod(shape)) * dtype.itemsize
            raw = (ctypes.c_char * nbytes).from_address(pointer)
            feeds[name] = np.frombuffer(raw, dtype).reshape(shape).copy()
        names = [name for name, _, _ in binding.outputs]
        binding.values = [DeviceValue(array) for array in self.run(names, feeds)]

    def get_inputs(self):
        return self._real.get_inputs()

    def get_outputs(self):
        return self._real.get_outputs()

    def get_profiling_start_time_ns(self) -> int:
        return self._profiling_start_ns if self.on_cuda else self._real.get_profiling_start_time_ns()

    def run(self, output_names, feeds, run_options=None):
        outputs = self._real.run(output_names, feeds, run_options)
        if self._kernels and self.gpu is not None:
            self._simulate()
        return outputs

    def _simulate(self) -> None:
        gpu, thread = self.gpu, threading.get_native_id()
        assert gpu is not None
        run_start = time.time_ns()
        first = gpu.queue(thread, "memcpy", "HTOD", gpu.copy_ns)
        for kernel in self._kernels:
            t0 = time.time_ns()
            while time.time_ns() - t0 < gpu.node_host_ns:
                pass
            t1 = time.time_ns()
            # The launch 200 ns before the node ends: in the µs onnxruntime's trace floors away.
            gpu.queue(thread, "kernel", kernel["name"][: -len("_kernel_time")], gpu.kernel_ns, t1 - 200 + OFFSET_NS)
            self._event("Node", kernel["name"], t0, t1, thread, kernel.get("args", {}) | {"provider": CUDA})
        last = gpu.queue(thread, "memcpy", "DTOH", gpu.copy_ns) + gpu.copy_ns
        gpu.spans.append((thread, first, last))
        self._event("Session", "model_run", run_start, time.time_ns(), thread, {})

    def _event(self, cat: str, name: str, start: int, end: int, thread: int, args: dict) -> None:
        ts = (start - self._profiling_start_ns) // 1000  # onnxruntime floors both to the µs
        self._events.append(
            {"cat": cat, "name": name, "ts": ts, "dur": (end - start) // 1000, "tid": thread, "args": dict(args)}
        )

    def end_profiling(self) -> str:
        if not self.on_cuda:
            return self._real.end_profiling()
        path = Path(f"{self._prefix}_fake_{id(self)}.json")
        path.write_text(json.dumps(self._events))
        return str(path)


class DeviceValue:
    """An OrtValue "on the device": its buffer is host memory here."""

    def __init__(self, array: Any) -> None:
        self.array = array

    def data_ptr(self) -> int:
        return int(self.array.ctypes.data)

    def shape(self) -> list[int]:
        return list(self.array.shape)


class FakeBinding:
    """onnxruntime's IOBinding as the server uses it on CUDA."""

    def __init__(self) -> None:
        self.inputs: dict[str, tuple[Any, tuple[int, ...], int]] = {}  # name -> (dtype, shape, device pointer)
        self.outputs: list[tuple[str, str, int]] = []  # (name, device type, device id)
        self.values: list[DeviceValue] = []
        self.host_inputs: dict[str, Any] = {}

    def bind_input(self, name: str, device_type: str, device_id: int, element_type, shape, buffer_ptr: int) -> None:
        import numpy as np

        assert device_type == "cuda"
        self.inputs[name] = (np.dtype(element_type), tuple(shape), buffer_ptr)

    def bind_cpu_input(self, name: str, array: Any) -> None:  # onnxruntime copies it to the device at bind time
        self.host_inputs[name] = array.copy()

    def bind_output(self, name: str, device_type: str = "cpu", device_id: int = 0) -> None:
        self.outputs.append((name, device_type, device_id))

    def get_outputs(self) -> list[DeviceValue]:
        return self.values

    def copy_outputs_to_cpu(self) -> list[Any]:
        return [value.array.copy() for value in self.values]


def install(monkeypatch, cupti: FakeCupti | None = None, runtime: FakeRuntime | None = None, *, session: bool = True):
    """The fakes in place of cupti-python, cuda-bindings and (``session``) onnxruntime's InferenceSession."""
    from graphgen.profiling import cuda as gpu

    cupti = cupti if cupti is not None else FakeCupti()
    runtime = runtime if runtime is not None else FakeRuntime()
    package = types.ModuleType("cupti")
    package.cupti = cupti  # type: ignore[attr-defined]
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime  # type: ignore[attr-defined]
    cuda_package = types.ModuleType("cuda")
    cuda_package.bindings = bindings  # type: ignore[attr-defined]
    for name, module in {
        "cupti": package,
        "cupti.cupti": cupti,
        "cuda": cuda_package,
        "cuda.bindings": bindings,
        "cuda.bindings.runtime": runtime,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    # graphgen's per-process state, fresh for the test and restored after it (the probes' caches included).
    monkeypatch.setattr(gpu, "_registered", False)
    monkeypatch.setattr(gpu, "_CUPTI_LOCK", threading.Lock())
    monkeypatch.setattr(gpu, "_collecting", [])
    for probe in ("cupti_unavailable_reason", "cuda_runtime_unavailable_reason"):
        monkeypatch.setattr(gpu, probe, functools.cache(getattr(gpu, probe).__wrapped__))
    monkeypatch.setattr(gpu, "CUPTI_WAIT_S", 5.0)  # a lock left held fails the test in seconds, not forever
    if session:
        monkeypatch.setattr(FakeCudaSession, "gpu", Gpu(cupti))
        monkeypatch.setattr(FakeCudaSession, "built", [])
        monkeypatch.setattr(FakeCudaSession, "mode", "works")
        monkeypatch.setattr(ort, "InferenceSession", FakeCudaSession)
    return cupti, runtime
