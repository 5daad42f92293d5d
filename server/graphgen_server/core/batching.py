"""Dynamic batching: concurrent requests for one model run as one batch.

Requests queue; a batch is formed when one of the model's run slots is free, from what is queued
then (plus what arrives within ``delay`` of the first request, if a delay is set), up to
``max_batch`` rows; a request never splits across batches. While every slot is busy requests
accumulate, so batches grow with load and a lone request runs at once; a batch that reaches a
preferred size goes at once. Rows are independent in a
CNN, so each request's rows of the batch's output are exactly what it would have got alone (the
tests compare bit for bit).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from graphgen_server.config import ServerConfig
from graphgen_server.repository.model_config import ConfigError, ReadConfig

# A request's inputs by name, batch rows first in each.
Feeds = dict[str, np.ndarray]
# Runs one batch: the outputs (batch rows first) and the seconds onnxruntime took.
RunBatch = Callable[[Feeds], Awaitable[tuple[list[np.ndarray], float]]]


@dataclass(frozen=True)
class BatchResult:
    outputs: list[np.ndarray]  # this request's rows of every output
    queue_s: float  # from submit to the start of its batch's run
    infer_s: float
    batch_size: int


@dataclass
class _Pending:
    feeds: Feeds
    future: asyncio.Future[BatchResult]
    submitted: float = field(default_factory=time.perf_counter)

    @property
    def rows(self) -> int:
        return int(next(iter(self.feeds.values())).shape[0])


@dataclass(frozen=True)
class BatchingChoice:
    """Whether a model batches, how, and why (said in its load line)."""

    max_batch: int  # rows per batch at most (below 2: no dynamic batching)
    delay_s: float
    preferred: tuple[int, ...]
    max_queue_size: int  # requests waiting for a batch (0: no limit of its own)
    reason: str

    def describe(self) -> str:
        if self.max_batch < 2:
            return f"no dynamic batching ({self.reason})"
        preferred = f", preferred sizes {list(self.preferred)}" if self.preferred else ""
        delay = f", waiting up to {self.delay_s * 1e6:.0f} µs" if self.delay_s else ""
        return f"dynamic batching up to {self.max_batch}{preferred}{delay} ({self.reason})"


NO_BATCHING = BatchingChoice(0, 0.0, (), 0, "not loaded")
CPU_MEASURED = (
    "measured on 2 CPU cores (bench/server_batching.py), batching lowered EfficientNet-Lite0's throughput at 1, 8 and "
    "32 clients (0.46-0.89x) and paid only on a 32x32 toy model at 8+ clients (1.2-1.3x)"
)
CUDA_REASON = (
    "a GPU's throughput grows with the batch where a CPU's does not (not measured in this work: no GPU; "
    "bench/server_batching.py measures it)"
)


# Dynamic batching for a model without a config.pbtxt under --dynamic-batching auto, per execution
# provider: (on?, why), from bench/server_batching.py (figures in its output; see the README).
DEFAULT_BATCHING = {
    "CPUExecutionProvider": (False, CPU_MEASURED),
    "CUDAExecutionProvider": (True, CUDA_REASON),
}


def batching_choice(
    settings: ReadConfig, batched: bool, max_batch_size: int, server: ServerConfig, provider: str
) -> BatchingChoice:
    """The configuration's dynamic_batching where the model has one (config.pbtxt, or sent with
    RepositoryModelLoad); the server's default otherwise."""
    config = settings.config
    if settings.present:
        if not config.HasField("dynamic_batching"):
            return BatchingChoice(0, 0.0, (), 0, f"{settings.source} sets no dynamic_batching")
        if not batched:
            raise ConfigError("dynamic_batching needs max_batch_size > 0 (a batch dimension)")
        batching = config.dynamic_batching
        preferred = tuple(sorted({int(p) for p in batching.preferred_batch_size}))
        if any(not 0 < p <= max_batch_size for p in preferred):
            raise ConfigError(
                f"preferred_batch_size {list(preferred)} must lie within 1..max_batch_size {max_batch_size}"
            )
        return BatchingChoice(
            max(preferred) if preferred else max_batch_size,
            batching.max_queue_delay_microseconds / 1e6,
            preferred,
            batching.default_queue_policy.max_queue_size,
            settings.source,
        )
    if not batched:
        return BatchingChoice(0, 0.0, (), 0, "the model has no batch dimension")
    if server.batching_mode == "auto" and server.max_batch > 1:
        on, why = DEFAULT_BATCHING.get(provider, (False, f"no measurement for {provider}"))
        reason = f"default on {provider}: {why}; a config.pbtxt or --dynamic-batching on|off decides otherwise"
    else:
        on, reason = (
            server.batching,
            f"--dynamic-batching {server.batching_mode}"
            + (f", --max-batch {server.max_batch}" if server.max_batch < 2 else ""),
        )
    if not on:
        return BatchingChoice(0, 0.0, (), 0, reason)
    return BatchingChoice(min(server.max_batch, max_batch_size), server.batch_delay_us / 1e6, (), 0, reason)


class DynamicBatcher:
    def __init__(
        self, run_batch: RunBatch, max_batch: int, delay_s: float, slots: int, preferred: tuple[int, ...] = ()
    ) -> None:
        if max_batch < 2:
            raise ValueError("dynamic batching needs max_batch >= 2")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self._delay_s = delay_s
        # A batch is sent as soon as it reaches one of these sizes (Triton's preferred_batch_size).
        self._preferred = set(preferred)
        self._slots = asyncio.Semaphore(slots)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._held: _Pending | None = None  # taken from the queue but did not fit the last batch
        self._dispatcher: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    @property
    def waiting(self) -> int:
        """Requests queued for a batch, not yet running."""
        return self._queue.qsize() + (self._held is not None)

    async def submit(self, feeds: Feeds) -> BatchResult:
        """Queue ``feeds`` (rows first, at most max_batch rows) and wait for its rows of the result."""
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
        pending = _Pending(feeds, asyncio.get_running_loop().create_future())
        if pending.rows > self.max_batch:
            raise ValueError(f"{pending.rows} rows exceed max_batch {self.max_batch}")
        await self._queue.put(pending)
        return await pending.future

    async def _first(self) -> _Pending:
        """The next request (one held back from the last batch first), however long it takes."""
        if self._held is not None:
            pending, self._held = self._held, None
            return pending
        return await self._queue.get()

    async def _next(self, timeout: float) -> _Pending | None:
        """The next request if one comes within ``timeout`` seconds."""
        if self._held is not None:
            return await self._first()
        if timeout <= 0:
            return self._queue.get_nowait() if not self._queue.empty() else None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            first = await self._first()
            batch, rows = [first], first.rows
            deadline = time.perf_counter() + self._delay_s
            while rows < self.max_batch and rows not in self._preferred:
                pending = await self._next(deadline - time.perf_counter())
                if pending is None:
                    break
                if rows + pending.rows > self.max_batch:
                    self._held = pending
                    break
                batch.append(pending)
                rows += pending.rows
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            live = [p for p in batch if not p.future.done()]  # a cancelled call needs no rows
            if not live:
                return
            started = time.perf_counter()
            if len(live) == 1:
                stacked = live[0].feeds
            else:
                stacked = {name: np.concatenate([p.feeds[name] for p in live]) for name in live[0].feeds}
            rows_run = sum(p.rows for p in live)
            try:
                outputs, infer_s = await self._run_batch(stacked)
            except Exception as error:  # every request of the batch gets the failure
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(error)
                return
            offset = 0
            for p in live:
                rows = slice(offset, offset + p.rows)
                offset += p.rows
                if not p.future.done():
                    p.future.set_result(
                        BatchResult([o[rows] for o in outputs], started - p.submitted, infer_s, rows_run)
                    )
        finally:
            self._slots.release()

    async def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
