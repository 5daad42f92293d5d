"""One version of one model: what loading it made, and the state of serving it.

Runs happen on the runtime's worker threads (onnxruntime releases the GIL), so several requests
are in flight at once, except a run measured to take less than a thread hop's worth of time
(``LoadedVersion.inline_rows``), which happens on the event loop itself. A model that fails to load stays in the table,
not ready, with its reason; the others serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from graphgen.profiling.summary import Profile
from graphgen_protos import model_config_pb2 as mc
from graphgen_server.config import ServerConfig
from graphgen_server.core import providers
from graphgen_server.core.batching import DynamicBatcher, Feeds
from graphgen_server.core.errors import ModelUnavailable, QueueFull
from graphgen_server.core.instances import Instance, InstancePool
from graphgen_server.core.loaded import LoadedVersion, load_version
from graphgen_server.core.statistics import ModelStats
from graphgen_server.repository.layout import ModelFile
from graphgen_server.repository.model_config import ReadConfig

log = logging.getLogger("graphgen_server")


INLINE_PER_TURN = 4  # runs made on the event loop in one of its turns, before it looks at its sockets again
_inline_runs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


async def inline_turn() -> None:
    """Wait for a turn of the event loop in which fewer than INLINE_PER_TURN runs were made on it.

    Runs on the loop (``LoadedVersion.inline_rows``) answer nothing else meanwhile: without a bound,
    every call ready in one turn ran before the loop read its sockets again, health checks waiting
    behind them. A run past the bound yields (to the next turn, after the loop polled), so a call
    arriving meanwhile waits for INLINE_PER_TURN runs at most.
    """
    loop = asyncio.get_running_loop()
    while _inline_runs.get(loop, 0) >= INLINE_PER_TURN:
        await asyncio.sleep(0)
    if not _inline_runs.get(loop):
        loop.call_soon(_inline_runs.pop, loop, None)  # (callbacks scheduled now run in the next turn)
    _inline_runs[loop] = _inline_runs.get(loop, 0) + 1


@dataclass(frozen=True)
class RunOutcome:
    outputs: list[np.ndarray]  # in the order of LoadedVersion.outputs
    queue_s: float
    infer_s: float
    batch_size: int
    profile: Profile | None = None
    profile_setup_s: float = 0.0  # a profiled call: waiting for its profiling session, and warm-up runs
    profile_wait_s: float = 0.0  # a profiled call: waiting for the profiler (another profile, its thread, the trace)


class ModelVersion:
    """One version of one model: what loading it made (``loaded``, frozen) and its serving state.

    ``load`` makes it ready (``loaded`` set) or leaves it not ready with the ``reason``. The rest
    changes with every request: the rows queued or running, the calls holding it, its statistics,
    its dynamic batcher and its free instances.
    """

    def __init__(
        self, file: ModelFile, config: ServerConfig, executor: ThreadPoolExecutor, settings: ReadConfig | None = None
    ) -> None:
        self.name, self.version, self.path = file.name, str(file.version), file.path
        self.file = file
        self.config = config
        self.settings = settings or ReadConfig(mc.ModelConfig(), present=False)  # the model's config.pbtxt
        self._executor = executor
        self.loaded: LoadedVersion | None = None
        self.reason = "not loaded"
        # Serving state:
        self.stats = ModelStats()
        self.pending_rows = 0
        self.users = 0  # calls holding this version (Runtime.use); it is closed only once none does
        self.batcher: DynamicBatcher | None = None
        self.pool = InstancePool([])
        self._profile_hold: asyncio.Lock | None = None  # one profile holds the instances at a time
        self._unused: asyncio.Event | None = None

    @property
    def ready(self) -> bool:
        return self.loaded is not None

    @property
    def provider(self) -> str:
        """The execution provider it runs on ("" while not ready)."""
        return self.loaded.provider if self.loaded is not None else ""

    def served(self) -> LoadedVersion:
        """What loading made of this version; ModelUnavailable (with the reason) while it is not ready."""
        if self.loaded is None:
            raise ModelUnavailable(f"model {self.name!r} version {self.version} is not ready: {self.reason}")
        return self.loaded

    # -- loading --------------------------------------------------------------------------
    def load(self, choice: providers.ProviderChoice) -> None:
        try:
            loaded = load_version(self.file, self.settings, self.config, choice)
        except Exception as error:  # any load failure leaves this model not ready
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self.reason = f"failed to load {self.path}: {message}"
            log.error("model %s v%s NOT READY: %s", self.name, self.version, self.reason)
            return
        self.pool = InstancePool(list(loaded.instances))
        batching = loaded.batching
        if batching.max_batch > 1:
            self.batcher = DynamicBatcher(
                self._run_batch,
                batching.max_batch,
                batching.delay_s,
                slots=len(loaded.instances),
                preferred=batching.preferred,
            )
        self.loaded, self.reason = loaded, ""

    # -- running --------------------------------------------------------------------------
    @contextlib.contextmanager
    def admit(self, rows: int) -> Iterator[None]:
        """Count ``rows`` against the model's queue while the block runs; QueueFull if it is full."""
        limit = self.config.max_queue
        if self.pending_rows + rows > limit:
            raise QueueFull(
                f"model {self.name} v{self.version}: queue full ({self.pending_rows} of {limit} images "
                f"queued or running, this request adds {rows}); retry later"
            )
        self.pending_rows += rows
        try:
            yield
        finally:
            self.pending_rows -= rows

    def _run_sync(self, instance: Instance, feeds: Feeds) -> tuple[list[np.ndarray], float]:
        """One run on ``instance`` (blocking: on a worker thread, or on the loop for a fast one)."""
        return self.served().run_sync(instance, feeds)

    async def _run_batch(self, feeds: Feeds) -> tuple[list[np.ndarray], float]:
        """Run on the first free instance (waiting for one is queue time): on the event loop itself
        for a fast run (``LoadedVersion.inline_rows``), else on a worker thread."""
        loaded = self.served()
        rows = loaded.rows_of(feeds)
        inline = rows <= loaded.inline_rows
        if inline:
            await inline_turn()
        instance = await self.pool.take()
        try:
            if inline:
                outputs, infer_s = self._run_sync(instance, feeds)
            else:
                loop = asyncio.get_running_loop()
                outputs, infer_s = await loop.run_in_executor(self._executor, self._run_sync, instance, feeds)
        finally:
            self.pool.give_back(instance)
        self.stats.record_execution(rows, infer_s)
        return outputs, infer_s

    async def run(self, feeds: Feeds, *, profile: bool = False, profile_runs: int = 0) -> RunOutcome:
        """Run checked, admitted inputs; with ``profile``, alone on a profiling session, ``profile_runs`` times."""
        loaded = self.served()
        rows = loaded.rows_of(feeds)
        submitted = time.perf_counter()
        if profile:
            loop = asyncio.get_running_loop()
            runs = profile_runs or min(self.config.profile_runs, self.config.max_profile_runs)
            async with self._holding_for_profile():
                done = await loop.run_in_executor(self._executor, loaded.profiler.run, feeds, runs)
            # Queue: waiting for a worker thread only; the session's build and warm-up (setup) and
            # waiting for the profiler (another profile, its thread, reading the trace) are their own.
            queued_s = max(0.0, done.entered - submitted)
            self.stats.record_execution(rows, done.run_s / runs)
            return RunOutcome(done.outputs, queued_s, done.run_s, rows, done.profile, done.setup_s, done.wait_s)
        if self.batcher is not None and rows <= self.batcher.max_batch:
            queue_limit = loaded.batching.max_queue_size
            if queue_limit and self.batcher.waiting >= queue_limit:
                raise QueueFull(
                    f"model {self.name} v{self.version}: queue full ({self.batcher.waiting} requests waiting, "
                    f"dynamic_batching.default_queue_policy.max_queue_size {queue_limit}); retry later"
                )
            batched = await self.batcher.submit(feeds)
            return RunOutcome(batched.outputs, batched.queue_s, batched.infer_s, batched.batch_size)
        outputs, infer_s = await self._run_batch(feeds)
        total = time.perf_counter() - submitted
        return RunOutcome(outputs, max(0.0, total - infer_s), infer_s, rows)

    @contextlib.asynccontextmanager
    async def _holding_for_profile(self) -> AsyncIterator[None]:
        """With ``profile_exclusive``: every instance held while a profile runs, so that its runs get the
        CPU this model's serving would take (calls wait meanwhile: their queue time)."""
        if not self.config.profile_exclusive:
            yield
            return
        if self._profile_hold is None:  # made on first use: it belongs to the serving event loop
            self._profile_hold = asyncio.Lock()
        async with self._profile_hold:
            held = await self.pool.hold_all()
            try:
                yield
            finally:
                for instance in held:
                    self.pool.give_back(instance)

    # -- retiring -------------------------------------------------------------------------
    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self._unused is not None:
            self._unused.set()

    async def unused(self) -> None:
        """Wait until no call holds this version (after it left the table, none can take it again)."""
        if self.users:
            self._unused = asyncio.Event()
            await self._unused.wait()

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        if self.loaded is not None:
            self.loaded.close()
