"""Per-model-version inference statistics, in the shape of KServe/Triton's ModelStatistics."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass
class BatchDurations:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    """Counts per request (success/fail/queue/compute_*) and per executed batch (execution_count, batch_stats)."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0  # batch rows inferred
    execution_count: int = 0  # batches run
    last_inference_ms: int = 0
    batches: dict[int, BatchDurations] = field(default_factory=lambda: defaultdict(BatchDurations))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_request(
        self, *, ok: bool, total_s: float, queue_s: float = 0.0, input_s: float = 0.0, infer_s: float = 0.0,
        output_s: float = 0.0, rows: int = 0,
    ) -> None:  # fmt: skip
        with self.lock:
            if not ok:
                self.fail.add(total_s)
                return
            self.success.add(total_s)
            self.queue.add(queue_s)
            self.compute_input.add(input_s)
            self.compute_infer.add(infer_s)
            self.compute_output.add(output_s)
            self.inference_count += rows
            self.last_inference_ms = int(time.time() * 1000)

    def record_execution(self, batch_size: int, infer_s: float) -> None:
        with self.lock:
            self.execution_count += 1
            self.batches[batch_size].compute_infer.add(infer_s)
