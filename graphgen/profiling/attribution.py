"""GPU work attributed to the onnxruntime node that launched it (pure logic, tested on synthetic records).

On the CUDA execution provider onnxruntime's node events time ``OpKernel::Compute()`` on the host:
a CUDA node only *queues* its kernels there, so those times are launch times. CUPTI's activity
records give the real GPU times, and tie each GPU activity (kernel, memcpy, memset) to the host
API call that launched it by a **correlation id**. The API call record has the OS thread id and
host start time of the launch; the node running on that thread at that time launched it.

Method:

1. node spans: each node event's ``[ts, ts + dur]`` (µs since ``get_profiling_start_time_ns()``,
   wall-clock) becomes ``[start_ns + ts·1000, …]`` in wall-clock ns, then is moved into CUPTI's
   clock by ``offset_ns`` (CUPTI timestamp − wall clock, sampled side by side);
2. each GPU activity's launching API call is found by correlation id;
3. the launch is given to the node span on the same thread that contains the launch's start;
   a launch that no span contains (between nodes, or on another thread) is *unattributed* and
   reported as such, never spread over rows.

Error bound: onnxruntime's node times have 1 µs resolution and the clock offset is sampled
within a bracket of a few µs (reported), so only a launch within ``tolerance_ns`` of a node's
edge could be given to its neighbour; each such launch is counted as ``ambiguous``. The GPU
durations themselves are CUPTI's (ns resolution). Kernels a node launched are summed per node per
run; GPU idle time between kernels (host launch gaps) belongs to no node, so rows add up to
less than the CUDA-event run time by that idle time.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeSpan:
    """One node of one run, on the host, in CUPTI's clock."""

    kernel: str  # onnxruntime optimised-graph node name
    run: int
    thread_id: int
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class ApiCall:
    """A CUDA runtime/driver API call record (cudaLaunchKernel, cuLaunchKernel, cudaMemcpyAsync…)."""

    correlation_id: int
    thread_id: int
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class GpuActivity:
    """A kernel, memcpy or memset as the GPU ran it."""

    correlation_id: int
    start_ns: int
    end_ns: int
    name: str = ""

    @property
    def dur_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


@dataclass
class Attribution:
    device_ns: dict[tuple[int, str], int]  # (run, kernel) -> summed GPU time
    unattributed_ns: dict[int, int] = field(default_factory=dict)  # run -> GPU time given to no node
    unattributed: int = 0  # activities given to no node
    ambiguous: int = 0  # launches within the tolerance of a node's edge
    attributed: int = 0


def spans_from_trace(
    events: list[tuple[str, int, int, int, int]], profiling_start_ns: int, offset_ns: int
) -> list[NodeSpan]:
    """``(kernel, run, thread_id, ts_us, dur_us)`` node events -> spans in CUPTI's clock."""
    base = profiling_start_ns + offset_ns
    return [
        NodeSpan(kernel, run, thread, base + ts * 1000, base + (ts + dur) * 1000)
        for kernel, run, thread, ts, dur in events
    ]


def attribute(
    spans: list[NodeSpan], calls: list[ApiCall], activities: list[GpuActivity], *, tolerance_ns: int = 2000
) -> Attribution:
    """Sum each GPU activity's time into the node (of its run) whose span holds its launch."""
    by_thread: dict[int, list[NodeSpan]] = defaultdict(list)
    for span in spans:
        by_thread[span.thread_id].append(span)
    starts: dict[int, list[int]] = {}
    for thread, thread_spans in by_thread.items():
        thread_spans.sort(key=lambda s: s.start_ns)
        starts[thread] = [s.start_ns for s in thread_spans]
    call_of = {call.correlation_id: call for call in calls}
    result = Attribution(defaultdict(int), defaultdict(int))
    run_bounds = _run_bounds(spans)
    for activity in activities:
        call = call_of.get(activity.correlation_id)
        enclosing = _containing(by_thread, starts, call) if call is not None else None
        if call is None or enclosing is None:
            result.unattributed += 1
            run = _run_at(run_bounds, call.start_ns if call is not None else activity.start_ns)
            if run is not None:
                result.unattributed_ns[run] += activity.dur_ns
            continue
        result.attributed += 1
        result.device_ns[(enclosing.run, enclosing.kernel)] += activity.dur_ns
        if min(call.start_ns - enclosing.start_ns, enclosing.end_ns - call.start_ns) < tolerance_ns:
            result.ambiguous += 1
    result.device_ns = dict(result.device_ns)
    result.unattributed_ns = dict(result.unattributed_ns)
    return result


def _containing(by_thread: dict[int, list[NodeSpan]], starts: dict[int, list[int]], call: ApiCall) -> NodeSpan | None:
    thread_spans = by_thread.get(call.thread_id)
    if not thread_spans:
        return None
    index = bisect.bisect_right(starts[call.thread_id], call.start_ns) - 1
    if index >= 0 and thread_spans[index].start_ns <= call.start_ns <= thread_spans[index].end_ns:
        return thread_spans[index]
    return None


def _run_bounds(spans: list[NodeSpan]) -> list[tuple[int, int, int]]:
    bounds: dict[int, tuple[int, int]] = {}
    for span in spans:
        low, high = bounds.get(span.run, (span.start_ns, span.end_ns))
        bounds[span.run] = (min(low, span.start_ns), max(high, span.end_ns))
    return sorted((low, high, run) for run, (low, high) in bounds.items())


def _run_at(bounds: list[tuple[int, int, int]], time_ns: int) -> int | None:
    """The run whose first-to-last node span holds ``time_ns`` (GPU work launched outside any node)."""
    for low, high, run in bounds:
        if low <= time_ns <= high:
            return run
    return None
