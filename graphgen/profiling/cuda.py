"""Times on the GPU itself: CUPTI activity records per node and per run, CUDA events beside them.

Both are optional (``pip install 'graphgen-onnx[gpu]'``: ``cupti-python`` and ``cuda-bindings``); a
profile that cannot use them says so (its ``timing`` is ``launch``, and a note says why).

* **Per node and per run: CUPTI.** Kernel, memcpy and memset records, and the runtime and driver
  API calls that launched them, are collected around the measured runs and attributed to nodes
  by :mod:`.attribution` (method and error bound there). A run's GPU *span* (first GPU work to
  last) and *busy* time (the union of its kernels, copies and memsets) come from the same
  records. Thread ids are asked as the OS's (gettid), as onnxruntime's trace gives them.
* **Whole runs: CUDA events**, a cross-check only. The profiling session runs on a stream of our
  own (CUDA provider option ``user_compute_stream``), created **non-blocking**: a blocking stream
  is ordered with the legacy default stream, on which serving's ``bind_cpu_input`` copies run, so
  serving would wait for profiling and the profile would time serving's copies. Events on that
  stream bracket each run, but a run fed numpy arrays is synchronous on the host (its outputs are
  copied to pageable memory), the start event completes at once on an idle stream, and the
  graph's input copy runs before any node: the event time is close to host wall time, not GPU
  time. CUPTI's span is the figure the rows are compared with.
* **Failures never hang or poison the process.** CUPTI's buffers are per process, so one
  collector runs at a time (a lock); every CUPTI failure while starting or stopping releases that
  lock and is raised (or returned) as :class:`CudaError`, so the profile falls back to launch
  timing with a note and the next profile starts afresh. Whether CUPTI works at all is probed
  once per process by really starting it (cupti-python imports fine without a driver, and then
  raises ``NotSupportedError``, a RuntimeError, on first use).
* ``enable_cuda_graph`` replays a captured graph: onnxruntime then runs no node at all per run,
  so there are no node events to attribute to; such a session is refused for profiling.
"""

from __future__ import annotations

import ctypes
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphgen.profiling.attribution import ApiCall, GpuActivity

_CUPTI_LOCK = threading.Lock()  # CUPTI's activity buffers are per process: one collector at a time
CUPTI_WAIT_S = 120.0  # a profile waits this long for another profile's collection, then goes without CUPTI
_collecting: list[CuptiCollector] = []  # the collector the process-wide callbacks deliver to
_registered = False
BUFFER_BYTES = 8 * 1024 * 1024


class CudaError(RuntimeError):
    """A CUPTI or CUDA runtime call failed (its status named): a profile goes on with launch times and says why."""


def describe(error: BaseException) -> str:
    """``NotSupportedError: CUDA driver is not found (…)``: the exception's type says what failed."""
    return f"{type(error).__name__}: {error}"


@functools.cache
def cupti_unavailable_reason() -> str | None:
    """None when CUPTI activity records can be collected here, else why not (probed once per process)."""
    try:
        from cupti import cupti
    except ImportError as error:
        return f"cupti-python is not installed (pip install 'graphgen-onnx[gpu]'): {error}"
    except OSError as error:  # libcupti missing
        return f"CUPTI library not loadable: {error}"
    if not _CUPTI_LOCK.acquire(timeout=CUPTI_WAIT_S):
        return "CUPTI was busy with another collection for the whole probe"
    try:
        _register(cupti)
        kind = cupti.ActivityKind.CONCURRENT_KERNEL
        cupti.activity_enable(kind)
        cupti.activity_disable(kind)
        cupti.get_timestamp()
    except Exception as error:  # NotSupportedError (RuntimeError), cuptiError (Exception), …
        return f"CUPTI cannot start here ({describe(error)})"
    finally:
        _CUPTI_LOCK.release()
    return None


def _register(cupti: Any) -> None:
    """The thread-id type and the buffer callbacks: once per process (CUPTI keeps them)."""
    global _registered
    if not _registered:
        cupti.set_thread_id_type(cupti.ActivityThreadIdType.SYSTEM)  # gettid, as onnxruntime's trace
        cupti.activity_register_callbacks(lambda: (BUFFER_BYTES, 0), _deliver)
        _registered = True


def status_text(status: Any) -> str:
    """``cudaErrorInsufficientDriver (35): CUDA driver version is insufficient …`` for a cudaError_t."""
    from cuda.bindings import runtime

    name = getattr(status, "name", str(status))
    try:
        _, text = runtime.cudaGetErrorString(status)
        detail = text.decode() if isinstance(text, bytes) else str(text)
    except Exception:  # the status is what matters; its sentence is a courtesy
        detail = ""
    return f"{name} ({int(status)})" + (f": {detail}" if detail else "")


def check(result: Any, call: str) -> Any:
    """A cuda-bindings ``(status, *values)`` result: the value(s), or CudaError naming the status."""
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:
        raise CudaError(f"{call} failed: {status_text(status)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@functools.cache
def cuda_runtime_unavailable_reason() -> str | None:
    """None when cuda-bindings' runtime works here (events, streams, copies), else why not (the driver's status code included)."""
    try:
        from cuda.bindings import runtime
    except ImportError as error:
        return f"cuda-bindings is not installed (pip install 'graphgen-onnx[gpu]'): {error}"
    try:
        count = check(runtime.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except CudaError as error:
        return f"{error}{_versions(runtime)}"
    return None if count else "the CUDA runtime sees no device"


def _versions(runtime: Any) -> str:
    """`` (driver supports CUDA 12.4, runtime is CUDA 13.0)``: what a too-old driver looks like."""
    try:
        driver = check(runtime.cudaDriverGetVersion(), "cudaDriverGetVersion")
        own = check(runtime.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    except Exception:
        return ""
    supported = f"CUDA {driver // 1000}.{driver % 1000 // 10}" if driver else "no CUDA driver"
    return f" (driver: {supported}; runtime: CUDA {own // 1000}.{own % 1000 // 10})"


class EventTimer:
    """A non-blocking CUDA stream for the session, and events on it around each run."""

    def __init__(self, device_id: int = 0) -> None:
        from cuda.bindings import runtime

        self._rt = runtime
        self.device_id = device_id
        self.stream: Any = None
        self._events: list[Any] = []
        try:
            check(runtime.cudaSetDevice(device_id), f"cudaSetDevice({device_id})")
            self.stream = check(
                runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
            )
            for _ in range(2):
                self._events.append(check(runtime.cudaEventCreate(), "cudaEventCreate"))
        except BaseException:
            self.close()  # what was created before the failure is not leaked
            raise

    @property
    def stream_handle(self) -> str:
        """The stream's address as onnxruntime's ``user_compute_stream`` option wants it."""
        return str(int(self.stream))

    def time(self, run: Callable[[], None]) -> float:
        """Run ``run()`` between two events on the stream; the time between them, in µs."""
        start, end = self._events
        check(self._rt.cudaEventRecord(start, self.stream), "cudaEventRecord")
        run()
        check(self._rt.cudaEventRecord(end, self.stream), "cudaEventRecord")
        check(self._rt.cudaEventSynchronize(end), "cudaEventSynchronize")
        return float(check(self._rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime")) * 1e3

    def close(self) -> None:
        """Destroy the events and the stream (idempotent; failures here have nothing left to free)."""
        events, self._events = self._events, []
        for event in events:
            self._rt.cudaEventDestroy(event)
        stream, self.stream = self.stream, None
        if stream is not None:
            self._rt.cudaStreamDestroy(stream)


@dataclass
class CuptiRecords:
    calls: list[ApiCall] = field(default_factory=list)
    activities: list[GpuActivity] = field(default_factory=list)
    offset_ns: int = 0  # CUPTI timestamp - wall clock (time.time_ns), sampled at the start
    offset_bracket_ns: int = 0  # how far apart the two clock reads were: the offset's error bound
    dropped: int = 0  # records CUPTI dropped for want of buffer space (then rows may be short)
    incomplete: int = 0  # records with a start or end of 0 (CUPTI could not time them): left out


def clock_offset(read_cupti: Callable[[], int], samples: int = 5) -> tuple[int, int]:
    """(CUPTI − wall-clock ns, error bound): the tightest of a few side-by-side samples."""
    best = None
    for _ in range(samples):
        before = time.time_ns()
        stamp = read_cupti()
        after = time.time_ns()
        candidate = (after - before, stamp - (before + after) // 2)
        best = candidate if best is None or candidate[0] < best[0] else best
    assert best is not None
    return best[1], best[0]


def _memcpy_direction(cupti: Any, copy_kind: int) -> str:
    try:
        return str(cupti.ActivityMemcpyKind(copy_kind).name)  # HTOD, DTOH, DTOD, …
    except (AttributeError, ValueError):
        return ""


class CuptiCollector:
    """Collects kernel/memcpy/memset and API-call records between :meth:`start` and :meth:`stop`.

    :meth:`start` raises :class:`CudaError` (having released everything) when CUPTI fails;
    :meth:`stop` never raises: it returns why the records cannot be trusted, or None.
    """

    def __init__(self) -> None:
        from cupti import cupti

        self._cupti = cupti
        kind = cupti.ActivityKind
        self._kinds = [kind.CONCURRENT_KERNEL, kind.MEMCPY, kind.MEMSET, kind.RUNTIME, kind.DRIVER]
        self._gpu_kinds = {
            int(kind.CONCURRENT_KERNEL): "kernel",
            int(kind.MEMCPY): "memcpy",
            int(kind.MEMSET): "memset",
        }
        self._api_kinds = {int(kind.RUNTIME), int(kind.DRIVER)}
        self._enabled: list[Any] = []
        self._holding = False
        self.failure: str | None = None  # set when CUPTI failed while collecting
        self.records = CuptiRecords()

    def _completed(self, activities: list) -> None:
        for record in activities:
            kind = int(record.kind)
            if kind not in self._gpu_kinds and kind not in self._api_kinds:
                continue
            if not record.start or not record.end:  # CUPTI could not time it: no honest duration
                self.records.incomplete += 1
            elif kind in self._api_kinds:
                self.records.calls.append(ApiCall(record.correlation_id, record.thread_id, record.start, record.end))
            else:
                family = self._gpu_kinds[kind]
                copy = _memcpy_direction(self._cupti, record.copy_kind) if family == "memcpy" else ""
                name = (getattr(record, "name", "") or "") if family == "kernel" else (copy or family)
                self.records.activities.append(
                    GpuActivity(record.correlation_id, record.start, record.end, name, family, copy)
                )

    def start(self) -> None:
        if not _CUPTI_LOCK.acquire(timeout=CUPTI_WAIT_S):
            raise CudaError(f"another profile held CUPTI for {CUPTI_WAIT_S:.0f} s")
        self._holding = True
        cupti = self._cupti
        try:
            _collecting[:] = [self]
            _register(cupti)
            for kind in self._kinds:
                cupti.activity_enable(kind)
                self._enabled.append(kind)
            self.records.offset_ns, self.records.offset_bracket_ns = clock_offset(cupti.get_timestamp)
        except Exception as error:
            self._release()
            raise CudaError(f"CUPTI failed to start ({describe(error)})") from error

    def now(self) -> int:
        """CUPTI's clock, in ns (0, and the collection marked failed, if CUPTI fails)."""
        try:
            return int(self._cupti.get_timestamp())
        except Exception as error:
            self.failure = self.failure or f"CUPTI's clock failed ({describe(error)})"
            return 0

    def stop(self) -> str | None:
        """Flush and disable; always releases CUPTI. Why the records are unusable, or None."""
        cupti = self._cupti
        try:
            cupti.activity_flush_all(1)
            self._disable()
            cupti.activity_flush_all(1)  # records completed while disabling
            self.records.dropped = self._dropped()
        except Exception as error:
            self.failure = self.failure or f"CUPTI failed to deliver its records ({describe(error)})"
        finally:
            self._release()
        return self.failure

    def _dropped(self) -> int:
        count = ctypes.c_size_t(0)
        self._cupti.activity_get_num_dropped_records(0, 0, ctypes.addressof(count))  # the global queue
        return int(count.value)

    def _disable(self) -> None:
        """Disable what was enabled (idempotent, never raises)."""
        enabled, self._enabled = self._enabled, []
        for kind in enabled:
            try:
                self._cupti.activity_disable(kind)
            except Exception as error:
                self.failure = self.failure or f"CUPTI failed to stop ({describe(error)})"

    def _release(self) -> None:
        """Disable what was enabled and let the next collector in (idempotent, never raises)."""
        self._disable()
        if self._holding:
            _collecting.clear()
            self._holding = False
            _CUPTI_LOCK.release()

    def __enter__(self) -> CuptiCollector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _deliver(activities: list) -> None:
    """CUPTI's buffer-completed callback: the records go to the collector of the moment, if any."""
    for collector in _collecting:
        collector._completed(activities)
