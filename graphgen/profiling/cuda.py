"""Times on the GPU itself: CUDA events around whole runs, CUPTI activity records per node.

Both are optional (``pip install 'graphgen-onnx[gpu]'``: ``cupti-python`` and ``cuda-bindings``); a
profile that cannot use them says so (its ``timing`` is ``launch``, and a note says why).

* **Whole runs: CUDA events.** The profiling session is created on a stream of our own (CUDA
  provider option ``user_compute_stream``); each run is bracketed by ``cudaEventRecord`` on that
  stream and run with ``disable_synchronize_execution_providers=1`` so onnxruntime does not
  synchronise the device behind our back; ``cudaEventElapsedTime`` (about 0.5 µs resolution)
  then gives the GPU time from the run's first queued work to its last, the copy of the
  outputs to the host included.
* **Per node: CUPTI.** Kernel, memcpy and memset records, and the runtime and driver API calls
  that launched them, are collected around the measured runs and attributed to nodes by
  :mod:`.attribution` (method and error bound there). Thread ids are asked as the OS's (gettid),
  as onnxruntime's trace gives them.
* ``enable_cuda_graph`` replays a captured graph: onnxruntime then runs no node at all per run,
  so there are no node events to attribute to; such a session is refused for profiling.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from graphgen.profiling.attribution import ApiCall, GpuActivity

_CUPTI_LOCK = threading.Lock()  # CUPTI's activity buffers are per process: one collector at a time
_collecting: list[CuptiCollector] = []  # the collector the process-wide callbacks deliver to
_registered = False


@functools.cache
def cupti_unavailable_reason() -> str | None:
    """None when CUPTI activity records can be collected here, else why not."""
    try:
        from cupti import cupti  # noqa: F401
    except ImportError as error:
        return f"cupti-python is not installed (pip install 'graphgen-onnx[gpu]'): {error}"
    except OSError as error:  # libcupti missing
        return f"CUPTI library not loadable: {error}"
    return None


@functools.cache
def cuda_events_unavailable_reason() -> str | None:
    try:
        from cuda.bindings import runtime  # noqa: F401
    except ImportError as error:
        return f"cuda-bindings is not installed (pip install 'graphgen-onnx[gpu]'): {error}"
    return None


def _check(result) -> Any:  # cuda-bindings' handles and numbers, untyped
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:
        raise RuntimeError(f"CUDA runtime call failed: {status}")
    return values[0] if len(values) == 1 else values


class EventTimer:
    """A CUDA stream for the session, and events on it around each run."""

    def __init__(self, device_id: int = 0) -> None:
        from cuda.bindings import runtime

        self._rt = runtime
        _check(runtime.cudaSetDevice(device_id))
        # A blocking stream: ordered with the legacy default stream, whatever onnxruntime copies on.
        self.stream = _check(runtime.cudaStreamCreateWithFlags(runtime.cudaStreamDefault))
        self._start = _check(runtime.cudaEventCreate())
        self._end = _check(runtime.cudaEventCreate())

    @property
    def stream_handle(self) -> str:
        """The stream's address as onnxruntime's ``user_compute_stream`` option wants it."""
        return str(int(self.stream))

    def time(self, run) -> float:
        """Run ``run()`` between two events on the stream; the GPU time between them, in µs."""
        _check(self._rt.cudaEventRecord(self._start, self.stream))
        run()
        _check(self._rt.cudaEventRecord(self._end, self.stream))
        _check(self._rt.cudaEventSynchronize(self._end))
        return float(_check(self._rt.cudaEventElapsedTime(self._start, self._end))) * 1e3

    def close(self) -> None:
        for event in (self._start, self._end):
            self._rt.cudaEventDestroy(event)
        self._rt.cudaStreamDestroy(self.stream)


@dataclass
class CuptiRecords:
    calls: list[ApiCall] = field(default_factory=list)
    activities: list[GpuActivity] = field(default_factory=list)
    offset_ns: int = 0  # CUPTI timestamp - wall clock (time.time_ns), sampled at the start
    offset_bracket_ns: int = 0  # how far apart the two clock reads were: the offset's error bound
    dropped: int = 0


def clock_offset(read_cupti, samples: int = 5) -> tuple[int, int]:
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


class CuptiCollector:
    """Collects kernel/memcpy/memset and API-call records while the ``with`` block runs."""

    def __init__(self) -> None:
        from cupti import cupti

        self._cupti = cupti
        kind = cupti.ActivityKind
        self._kinds = [kind.CONCURRENT_KERNEL, kind.MEMCPY, kind.MEMSET, kind.RUNTIME, kind.DRIVER]
        self._gpu_kinds = {int(kind.CONCURRENT_KERNEL), int(kind.MEMCPY), int(kind.MEMSET)}
        self._api_kinds = {int(kind.RUNTIME), int(kind.DRIVER)}
        self.records = CuptiRecords()

    def _completed(self, activities: list) -> None:
        for record in activities:
            if int(record.kind) in self._gpu_kinds:
                self.records.activities.append(
                    GpuActivity(record.correlation_id, record.start, record.end, getattr(record, "name", "") or "")
                )
            elif int(record.kind) in self._api_kinds:
                self.records.calls.append(ApiCall(record.correlation_id, record.thread_id, record.start, record.end))

    def __enter__(self) -> CuptiCollector:
        global _registered
        _CUPTI_LOCK.acquire()
        cupti = self._cupti
        _collecting[:] = [self]
        if not _registered:  # the buffer callbacks are registered once per process
            cupti.set_thread_id_type(cupti.ActivityThreadIdType.SYSTEM)  # gettid, as onnxruntime's trace
            cupti.activity_register_callbacks(lambda: (8 * 1024 * 1024, 0), _deliver)
            _registered = True
        for kind in self._kinds:
            cupti.activity_enable(kind)
        self.records.offset_ns, self.records.offset_bracket_ns = clock_offset(cupti.get_timestamp)
        return self

    def __exit__(self, *exc) -> None:
        cupti = self._cupti
        try:
            cupti.activity_flush_all(1)
            for kind in self._kinds:
                cupti.activity_disable(kind)
            cupti.activity_flush_all(1)  # records completed while disabling
        finally:
            _collecting.clear()
            _CUPTI_LOCK.release()


def _deliver(activities: list) -> None:
    """CUPTI's buffer-completed callback: the records go to the collector of the moment, if any."""
    for collector in _collecting:
        collector._completed(activities)
