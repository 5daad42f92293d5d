"""Per-model-version inference statistics, in the shape of KServe/Triton's ModelStatistics.

The runtime records every request it finished (:meth:`ModelStats.record_request`) and every batch
it ran (:meth:`ModelStats.record_execution`); :meth:`ModelStats.snapshot` gives a consistent copy.
That copy holds what Triton's ``nv_inference_*`` metrics count (success/failure per reason,
inference and execution counts, cumulative request/queue/compute durations), so an exporter reads
them at scrape time, never touching a servicer.

With several front-end processes each counts its own requests; :func:`merged` sums what every one
of them counted (gathered over the control channel, :mod:`graphgen_server.core.control`), so
ModelStatistics and ``/metrics`` count each request once, whichever process served it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def absorb(self, other: Duration) -> None:
        self.count += other.count
        self.ns += other.ns


@dataclass
class BatchDurations:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(frozen=True)
class RequestRecord:
    """One finished request, as the runtime saw it (seconds; ``failure``: "" on success)."""

    ok: bool
    total_s: float
    queue_s: float = 0.0
    input_s: float = 0.0  # request data to model input (decoding and preprocessing images)
    infer_s: float = 0.0  # onnxruntime's run (shared by every request of a dynamic batch)
    output_s: float = 0.0  # model output to response values (top-k, classification strings)
    rows: int = 0
    batch_size: int = 0  # rows of the batch it ran in
    profiled: bool = False
    failure: str = ""  # Triton's failure reason: REJECTED, CANCELED, BACKEND, OTHER


@dataclass
class ModelStats:
    """Counts per request (success/fail/queue/compute_*) and per executed batch (execution_count, batch_stats)."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    failures: Counter[str] = field(default_factory=Counter)  # by reason
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0  # batch rows inferred
    execution_count: int = 0  # batches run
    profiled_count: int = 0  # requests that asked for a per-layer profile
    last_inference_ms: int = 0
    batches: dict[int, BatchDurations] = field(default_factory=lambda: defaultdict(BatchDurations))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_request(self, record: RequestRecord) -> None:
        with self.lock:
            if not record.ok:
                self.fail.add(record.total_s)
                self.failures[record.failure or "OTHER"] += 1
                return
            self.success.add(record.total_s)
            self.queue.add(record.queue_s)
            self.compute_input.add(record.input_s)
            self.compute_infer.add(record.infer_s)
            self.compute_output.add(record.output_s)
            self.inference_count += record.rows
            self.profiled_count += record.profiled
            self.last_inference_ms = int(time.time() * 1000)

    def stages(self) -> dict[str, Duration]:
        """Each request stage's cumulative duration, under Triton's names (ModelStatistics' inference_stats)."""
        return {
            "success": self.success,
            "fail": self.fail,
            "queue": self.queue,
            "compute_input": self.compute_input,
            "compute_infer": self.compute_infer,
            "compute_output": self.compute_output,
        }

    def record_execution(self, batch_size: int, infer_s: float) -> None:
        with self.lock:
            self.execution_count += 1
            self.batches[batch_size].compute_infer.add(infer_s)

    def snapshot(self) -> ModelStats:
        """A copy taken under the lock (read it without locking)."""
        with self.lock:
            fields = {name: copy.deepcopy(getattr(self, name)) for name in self.__dataclass_fields__ if name != "lock"}
        return ModelStats(**fields)

    def absorb(self, other: ModelStats) -> None:
        """Add ``other``'s counts to these (another front-end's snapshot of the same version)."""
        for name in DURATIONS:
            getattr(self, name).absorb(getattr(other, name))
        self.failures.update(other.failures)
        self.inference_count += other.inference_count
        self.execution_count += other.execution_count
        self.profiled_count += other.profiled_count
        self.last_inference_ms = max(self.last_inference_ms, other.last_inference_ms)
        for size, batch in other.batches.items():
            mine = self.batches[size]
            for name in ("compute_input", "compute_infer", "compute_output"):
                getattr(mine, name).absorb(getattr(batch, name))

    def __getstate__(self) -> dict[str, Any]:  # (crosses processes pickled: the lock stays behind)
        return {name: value for name, value in self.__dict__.items() if name != "lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, lock=threading.Lock())


DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class VersionStats:
    """A model version's statistics as one front-end counted them (or, merged, as all did)."""

    name: str
    version: str
    ready: bool
    provider: str
    pending_rows: int  # images queued or running
    stats: ModelStats  # a snapshot


def merged(parts: Iterable[list[VersionStats]]) -> list[VersionStats]:
    """Every front-end's statistics summed per version, in the order the first front-end lists them."""
    totals: dict[tuple[str, str], VersionStats] = {}
    for part in parts:
        for entry in part:
            key = (entry.name, entry.version)
            total = totals.get(key)
            if total is None:
                totals[key] = VersionStats(
                    entry.name, entry.version, entry.ready, entry.provider, entry.pending_rows, entry.stats.snapshot()
                )
                continue
            total.stats.absorb(entry.stats)
            totals[key] = VersionStats(
                total.name,
                total.version,
                total.ready and entry.ready,
                total.provider,
                total.pending_rows + entry.pending_rows,
                total.stats,
            )
    return list(totals.values())
