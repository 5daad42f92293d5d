"""GPU work attributed to the run and the onnxruntime node that launched it (pure logic, tested on synthetic records).

On the CUDA execution provider onnxruntime's node events time ``OpKernel::Compute()`` on the host:
a CUDA node only *queues* its kernels there, so those times are launch times. CUPTI's activity
records give the real GPU times, and tie each GPU activity (kernel, memcpy, memset) to the host
API call that launched it by a **correlation id**. The API call record has the OS thread id and
host start time of the launch; the run and the node running on that thread at that time launched it.

Method:

1. runs: each measured run is bracketed on the profiling thread by two reads of CUPTI's own
   clock (:class:`RunWindow`); a launch on that thread inside a window belongs to that run. A
   launch on any other thread, or outside every window, is **not the profile's**: CUPTI is
   process-wide, so a server's serving sessions are recorded too. Those are counted apart
   (``other``), never put in a row;
2. node spans: each node event's ``[ts, ts + dur]`` (µs since ``get_profiling_start_time_ns()``,
   wall-clock) becomes ``[start_ns + ts·1000, …]`` in wall-clock ns, then is moved into CUPTI's
   clock by ``offset_ns`` (CUPTI timestamp − wall clock, sampled side by side within a bracket,
   the *slack*). onnxruntime *floors* both ``ts`` and ``dur`` to the µs, so a node's true end can
   be up to 2 µs after ``ts + dur``: each span is widened by :data:`FLOOR_WIDENING_NS` plus the
   slack at its end (and by the slack at its start), and a launch is given to the last node (on its
   thread, in its run) that started at or before it, if that node's widened span holds it;
3. a run's launches that no node holds are the run's own work outside the graph: onnxruntime
   copies the graph's inputs to the device before the first node (``CopyInputsAcrossDevices``)
   and its outputs back after the last, so host→device copies become the row
   :data:`INPUT_COPY`, device→host copies :data:`OUTPUT_COPY`, anything else is *unattributed*
   and reported as such, never spread over rows;
4. per run, the GPU **span** (first GPU work's start to last one's end) and **busy** time (the
   union of its activities' intervals) are computed from the same records: the span is the run's
   GPU time, span − busy the GPU idle inside it (waiting for the host to launch).

Error bound: onnxruntime's node times have 1 µs resolution and the clock offset is sampled
within a bracket of a few µs (reported), so only a launch within 1 µs + slack of a node's start,
or past its floored end less the slack, could belong to a neighbour (or to no node); each such
launch is counted as ``ambiguous``. The GPU durations themselves are CUPTI's (ns resolution).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

FLOOR_NS = 1000  # onnxruntime's trace floors ts and dur to the µs: a true start is < ts + 1 µs,
FLOOR_WIDENING_NS = 2 * FLOOR_NS  # and a true end < ts + dur + 2 µs
INPUT_COPY = "[copy] inputs host→device"  # pseudo-kernels: rows of their own
OUTPUT_COPY = "[copy] outputs device→host"
COPY_ROWS = {"HTOD": INPUT_COPY, "DTOH": OUTPUT_COPY}


@dataclass(frozen=True)
class NodeSpan:
    """One node of one run, on the host, in CUPTI's clock."""

    kernel: str  # onnxruntime optimised-graph node name
    run: int
    thread_id: int
    start_ns: int  # as the trace says (floored)
    end_ns: int


@dataclass(frozen=True)
class RunWindow:
    """One measured run on the host, read on CUPTI's clock just before and after ``session.run``."""

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
    family: str = "kernel"  # kernel | memcpy | memset
    copy: str = ""  # a memcpy's direction as CUPTI names it: HTOD, DTOH, DTOD, …

    @property
    def dur_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


@dataclass
class Attribution:
    device_ns: dict[tuple[int, str], int]  # (run, kernel or copy row) -> summed GPU time
    launch_ns: dict[tuple[int, str], int] = field(default_factory=dict)  # (run, copy row) -> host time of its calls
    span_ns: dict[int, int] = field(default_factory=dict)  # run -> first GPU start to last GPU end
    busy_ns: dict[int, int] = field(default_factory=dict)  # run -> union of its GPU activities
    unattributed_ns: dict[int, int] = field(default_factory=dict)  # run -> its GPU time given to no row
    unattributed: int = 0  # the runs' activities given to no row
    ambiguous: int = 0  # launches within the tolerance of a node's edge
    attributed: int = 0  # activities in a node's or a copy's row
    other: int = 0  # activities launched by other threads or outside the runs (serving, other sessions)
    other_ns: int = 0
    unlaunched: int = 0  # activities with no API record to tell who launched them (counted in other)


def spans_from_trace(
    events: list[tuple[str, int, int, int, int]], profiling_start_ns: int, offset_ns: int
) -> list[NodeSpan]:
    """``(kernel, run, thread_id, ts_us, dur_us)`` node events -> spans in CUPTI's clock (as floored)."""
    base = profiling_start_ns + offset_ns
    return [
        NodeSpan(kernel, run, thread, base + ts * 1000, base + (ts + dur) * 1000)
        for kernel, run, thread, ts, dur in events
    ]


def attribute(
    spans: list[NodeSpan],
    windows: list[RunWindow],
    calls: list[ApiCall],
    activities: list[GpuActivity],
    *,
    slack_ns: int = 0,
) -> Attribution:
    """Each GPU activity into the row of its run and node (or copy), or counted apart as not the profile's.

    ``slack_ns``: how far the spans' clock may be off CUPTI's (the clock offset's bracket).
    """
    nodes = _Index(spans, slack_ns)
    call_of = {call.correlation_id: call for call in calls}
    result = Attribution(defaultdict(int), defaultdict(int), unattributed_ns=defaultdict(int))
    intervals: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for activity in activities:
        call = call_of.get(activity.correlation_id)
        window = _window_of(windows, call) if call is not None else None
        if call is None or window is None:
            result.other += 1
            result.other_ns += activity.dur_ns
            result.unlaunched += call is None
            continue
        run = window.run
        intervals[run].append((activity.start_ns, activity.end_ns))
        span = nodes.holding(call, run)
        if span is not None:
            result.attributed += 1
            result.device_ns[(run, span.kernel)] += activity.dur_ns
            # Near the floored start, or past the floored end (in the widening): could be a neighbour's.
            if call.start_ns < span.start_ns + FLOOR_NS + slack_ns or call.start_ns > span.end_ns - slack_ns:
                result.ambiguous += 1
        elif activity.family == "memcpy" and activity.copy in COPY_ROWS:
            result.attributed += 1
            row = COPY_ROWS[activity.copy]
            result.device_ns[(run, row)] += activity.dur_ns
            result.launch_ns[(run, row)] += max(0, call.end_ns - call.start_ns)
        else:
            result.unattributed += 1
            result.unattributed_ns[run] += activity.dur_ns
    for run, spans_of_run in intervals.items():
        result.span_ns[run] = max(end for _, end in spans_of_run) - min(start for start, _ in spans_of_run)
        result.busy_ns[run] = _union(spans_of_run)
    result.device_ns = dict(result.device_ns)
    result.launch_ns = dict(result.launch_ns)
    result.unattributed_ns = dict(result.unattributed_ns)
    return result


class _Index:
    """Node spans per (thread, run), sorted by start, for "the last node started at or before t"."""

    def __init__(self, spans: list[NodeSpan], slack_ns: int) -> None:
        self._slack = slack_ns
        self._spans: dict[tuple[int, int], list[NodeSpan]] = defaultdict(list)
        for span in spans:
            self._spans[(span.thread_id, span.run)].append(span)
        self._starts: dict[tuple[int, int], list[int]] = {}
        for key, group in self._spans.items():
            group.sort(key=lambda s: s.start_ns)
            self._starts[key] = [s.start_ns for s in group]

    def holding(self, call: ApiCall, run: int) -> NodeSpan | None:
        key = (call.thread_id, run)
        group = self._spans.get(key)
        if not group:
            return None
        index = bisect.bisect_right(self._starts[key], call.start_ns + self._slack) - 1
        if index >= 0 and call.start_ns <= group[index].end_ns + FLOOR_WIDENING_NS + self._slack:
            return group[index]
        return None


def _window_of(windows: list[RunWindow], call: ApiCall) -> RunWindow | None:
    for window in windows:
        if window.thread_id == call.thread_id and window.start_ns <= call.start_ns <= window.end_ns:
            return window
    return None


def _union(intervals: list[tuple[int, int]]) -> int:
    """Length of the union of [start, end) intervals (kernels on several streams may overlap)."""
    total, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total
