"""One version of one model: its onnxruntime session, what it takes and gives, its batcher and profiler.

Runs happen on the runtime's worker threads (onnxruntime releases the GIL), never on the event
loop, so several requests are in flight at once. A model that fails to load stays in the table,
not ready, with its reason; the others serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from graphgen.metadata import ARCHITECTURE, MetadataError, Preprocess
from graphgen.onnx_io import ModelFileError, check_model_file
from graphgen.preprocess import ImageError, decode_image, image_to_tensor, labels_for
from graphgen.profiling.summary import Profile
from graphgen_protos import model_config_pb2 as mc
from graphgen_server.config import ServerConfig
from graphgen_server.core import providers
from graphgen_server.core.batching import NO_BATCHING, DynamicBatcher, Feeds, batching_choice
from graphgen_server.core.errors import InvalidArgument, QueueFull
from graphgen_server.core.instances import Instance, InstancePool, plan_instances, session_options
from graphgen_server.core.profiler import Profiler
from graphgen_server.core.statistics import ModelStats
from graphgen_server.repository.layout import ModelFile
from graphgen_server.repository.model_config import (
    ConfigError,
    ReadConfig,
    ServedTensor,
    batch_limit,
    effective_config,
    serve_tensors,
    warmup_feeds,
)
from graphgen_server.tensors import TensorInfo, describe

log = logging.getLogger("graphgen_server")


@dataclass(frozen=True)
class RunOutcome:
    outputs: list[np.ndarray]  # in the order of ModelVersion.outputs
    queue_s: float
    infer_s: float
    batch_size: int
    profile: Profile | None = None
    profile_setup_s: float = 0.0  # a profiled call: waiting for its profiling session, and warm-up runs


def _reshaped(array: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    """``array`` in ``shape`` (None: the batch, or a dimension of any size, taken from the data)."""
    if shape and shape[0] is None:
        return array.reshape((array.shape[0], *(-1 if d is None else d for d in shape[1:])))
    return array.reshape(tuple(-1 if d is None else d for d in shape))


def _all_finite(array: np.ndarray) -> bool:
    if array.dtype.itemsize < 8:
        # A float64 sum of float16/32 values cannot overflow: it is finite exactly when every value is.
        return bool(np.isfinite(array.sum(dtype=np.float64)))
    return bool(np.isfinite(array).all())


class ModelVersion:
    """One version of one model; ``load`` makes it ready (or leaves it not ready with the reason)."""

    def __init__(
        self, file: ModelFile, config: ServerConfig, executor: ThreadPoolExecutor, settings: ReadConfig | None = None
    ) -> None:
        self.name, self.version, self.path = file.name, str(file.version), file.path
        self.file = file
        self.config = config
        self.settings = settings or ReadConfig(mc.ModelConfig(), present=False)  # the model's config.pbtxt
        self._executor = executor
        self.ready = False
        self.reason = "not loaded"
        self.provider = self.provider_reason = ""
        self.metadata: dict[str, str] = {}
        self.image_spec: Preprocess | None = None
        self.labels: list[str] = []
        self.stats = ModelStats()
        self.batcher: DynamicBatcher | None = None
        self.profiler: Profiler | None = None
        self.pending_rows = 0
        self.users = 0  # calls holding this version (Runtime.use); it is closed only once none does
        self._unused: asyncio.Event | None = None
        # Set by a successful load:
        self.session: ort.InferenceSession | None = None
        self.inputs: list[TensorInfo] = []
        self.outputs: list[TensorInfo] = []
        self.batched = False  # the first dimension of every input and output is the batch
        self.max_batch_size = 0
        self.served_inputs: list[ServedTensor] = []
        self.served_outputs: list[ServedTensor] = []
        self.instances: list[Instance] = []
        self.pool = InstancePool([])
        self.batching = NO_BATCHING
        self.model_config = mc.ModelConfig()  # as enforced (ModelConfig answers it)
        self.num_classes = 0
        self._choice: providers.ProviderChoice | None = None

    @property
    def input(self) -> TensorInfo:
        """The only input (models served by Classify take one)."""
        return self.inputs[0]

    # -- loading --------------------------------------------------------------------------
    def load(self, choice: providers.ProviderChoice) -> None:
        try:
            self._load(choice)
        except Exception as error:  # any load failure leaves this model not ready
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self.ready, self.reason = False, f"failed to load {self.path}: {message}"
            log.error("model %s v%s NOT READY: %s", self.name, self.version, self.reason)

    def _session_options(self) -> ort.SessionOptions:
        """The server's session settings and config.pbtxt's parameters (the profiler extends them)."""
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: the server logs what matters itself
        if self.config.intra_op_threads:
            options.intra_op_num_threads = self.config.intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.config.spin_threads else "0")
        return session_options(options, self.settings.config.parameters, [])

    def _load(self, choice: providers.ProviderChoice) -> None:
        if self.file.problem:
            raise ModelFileError(self.file.problem)
        check_model_file(self.path)  # onnxruntime must not follow external data out of the model's directory
        self._choice = choice
        config = self.settings.config
        notes: list[str] = []  # what the load line says beside the provider and batching
        if self.settings.ignored:  # Triton's fields that graphgen does not honour: said loudly, once per load
            log.warning(
                "model %s v%s: ignored config.pbtxt fields: %s",
                self.name, self.version, ", ".join(self.settings.ignored),
            )  # fmt: skip
        session_options(ort.SessionOptions(), config.parameters, notes)  # refuses bad values, notes the rest
        plan = plan_instances(self.name, config, self.config, choice)
        notes += plan.notes
        self.instances = []
        for name, kind, gpu, chosen in plan.groups:
            session = ort.InferenceSession(str(self.path), self._session_options(), providers=chosen)
            bind = session.get_providers()[0] == providers.CUDA and self.config.cuda.io_binding
            self.instances.append(Instance(name, session, kind, gpu, bind))
        self.pool = InstancePool(self.instances)
        self.session = self.instances[0].session
        model_inputs = [TensorInfo.from_ort(a) for a in self.session.get_inputs()]
        model_outputs = [TensorInfo.from_ort(a) for a in self.session.get_outputs()]
        self.max_batch_size = batch_limit(self.settings, [*model_inputs, *model_outputs], self.config.max_images)
        self.batched = self.max_batch_size > 0
        self.served_inputs = serve_tensors(config.input, model_inputs, self.batched, "input")
        self.served_outputs = serve_tensors(config.output, model_outputs, self.batched, "output")
        self.inputs = [t.info for t in self.served_inputs]
        self.outputs = [t.info for t in self.served_outputs]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if len(self.inputs) == 1 and self.input.datatype == "FP32":
            try:
                self.image_spec = Preprocess.from_metadata(self.metadata)
            except MetadataError as error:  # tensors only, no images
                if ARCHITECTURE in self.metadata:  # built by graphgen, yet its preprocessing cannot be read
                    log.warning("model %s v%s takes tensors only, no images: %s", self.name, self.version, error)
        classes = self.outputs[0].shape[-1] if self.outputs and self.outputs[0].shape else None
        self.num_classes = classes or 0
        self.labels = labels_for(self.metadata, self.num_classes) if classes else []
        self.provider, self.provider_reason = providers.describe_session(choice, self.session)
        warmup = {t.name: np.zeros([d or 1 for d in t.shape], t.dtype) for t in self.inputs}
        for instance in self.instances:
            self._run_sync(instance, warmup)  # first-run allocations happen now, not in a request
        for entry in config.model_warmup:  # config.pbtxt's warm-up runs, before the model is ready
            feeds = warmup_feeds(entry, self.inputs, self.batched, self.path.parent.parent / "warmup")
            runs = max(entry.count, 1)
            try:
                for instance in self.instances:
                    for _ in range(runs):
                        self._run_sync(instance, feeds)
            except Exception as error:
                raise ConfigError(f"model_warmup {entry.name!r} failed: {error}") from None
            notes.append(f"warm-up {entry.name!r}: {runs} run(s) on each instance")
        self.batching = batching_choice(self.settings, self.batched, self.max_batch_size, self.config, self.provider)
        if self.batching.max_batch > 1:
            self.batcher = DynamicBatcher(
                self._run_batch, self.batching.max_batch, self.batching.delay_s, slots=len(self.instances),
                preferred=self.batching.preferred,
            )  # fmt: skip
        self.profiler = Profiler(self.path, choice.providers, self._session_options, warmup)
        self.model_config = effective_config(self)
        self.ready, self.reason = True, ""
        shown = "; ".join(f"{t.name} {t.datatype} {describe(t.shape)}" for t in self.inputs)
        log.info(
            "model %s v%s: %s (%s); %d instance(s); input %s; %s%s",
            self.name, self.version, self.provider, self.provider_reason, len(self.instances), shown,
            self.batching.describe(), "".join(f"; {note}" for note in notes),
        )  # fmt: skip

    # -- checking -------------------------------------------------------------------------
    def rows_of(self, feeds: Feeds) -> int:
        """Rows of a checked request: its batch size, or 1 for a model without a batch dimension."""
        return int(next(iter(feeds.values())).shape[0]) if self.batched else 1

    def check_array(self, array: np.ndarray, info: TensorInfo, fit_field: str) -> None:
        """Refuse an array that does not fit the model's input ``info``, naming ``fit_field``."""
        if array.ndim != len(info.shape):
            raise InvalidArgument(
                fit_field, f"shape {list(array.shape)} has rank {array.ndim}, model expects {describe(info.shape)}"
            )
        for axis, (got, want) in enumerate(zip(array.shape, info.shape)):
            if got < 1 or (want is not None and got != want):
                raise InvalidArgument(
                    fit_field, f"shape {list(array.shape)} does not fit {describe(info.shape)} (axis {axis})"
                )
        if self.batched and array.shape[0] > min(self.max_batch_size, self.config.max_images):
            limit = (
                f"the limit of {self.config.max_images}"
                if self.config.max_images <= self.max_batch_size
                else f"the model's max_batch_size {self.max_batch_size}"
            )
            raise InvalidArgument(fit_field, f"batch of {array.shape[0]} exceeds {limit}")
        if array.dtype.kind == "f" and not _all_finite(array):
            first = int(np.flatnonzero(~np.isfinite(array))[0])
            raise InvalidArgument(
                fit_field, f"holds NaN or infinite values (the first at flat index {first}); send finite values"
            )

    def check_profile_runs(self, runs: int, field: str) -> None:
        """Refuse more profiled runs than the server allows (0: its default)."""
        if not 0 <= runs <= self.config.max_profile_runs:
            raise InvalidArgument(
                field,
                f"{runs} runs: a profile takes 1 to {self.config.max_profile_runs} runs (0: the default, "
                f"{self.config.profile_runs})",
            )

    def check_images(self, images: list[bytes]) -> None:
        """Refuse a list of encoded images this model cannot take (before any is decoded)."""
        if self.image_spec is None:
            raise InvalidArgument(
                "images", f"model {self.name} has no graphgen preprocessing metadata; send a tensor instead"
            )
        if not images:
            raise InvalidArgument("images", "no image given (send images or a tensor)")
        if len(images) > self.config.max_images:
            raise InvalidArgument("images", f"{len(images)} images exceed the limit of {self.config.max_images}")

    def preprocess(self, images: list[bytes]) -> np.ndarray:
        """Decode and preprocess encoded images into one batch (blocking: call from a worker)."""
        self.check_images(images)
        assert self.image_spec is not None
        batch = []
        for index, data in enumerate(images):
            try:
                image = decode_image(data, max_pixels=self.config.max_image_pixels)
            except ImageError as error:
                raise InvalidArgument(f"images[{index}]", str(error)) from None
            batch.append(image_to_tensor(image, self.image_spec))
        array = np.stack(batch)
        self.check_array(array, self.input, "images")
        return array

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
        session = instance.session
        for tensor in self.served_inputs:  # config.pbtxt's reshape: the request's shape to the model's
            if tensor.model_shape is not None:
                feeds = {**feeds, tensor.info.name: _reshaped(feeds[tensor.info.name], tensor.model_shape)}
        names = [t.name for t in self.outputs]
        started = time.perf_counter()
        if instance.io_binding:
            # Explicit binding on CUDA: each input goes to the device in one copy and the outputs
            # come back to host memory in one copy each.
            binding = session.io_binding()
            for name, array in feeds.items():
                binding.bind_cpu_input(name, array)
            for name in names:
                binding.bind_output(name, "cpu")
            session.run_with_iobinding(binding)
            outputs = binding.copy_outputs_to_cpu()
        else:
            outputs = session.run(names, feeds)
        elapsed = time.perf_counter() - started
        for index, tensor in enumerate(self.served_outputs):  # the model's shape back to the config's dims
            if tensor.model_shape is not None:
                outputs[index] = _reshaped(outputs[index], tensor.info.shape)
        return outputs, elapsed

    async def _run_batch(self, feeds: Feeds) -> tuple[list[np.ndarray], float]:
        """Run on the first free instance (waiting for one is queue time)."""
        instance = await self.pool.take()
        try:
            loop = asyncio.get_running_loop()
            outputs, infer_s = await loop.run_in_executor(self._executor, self._run_sync, instance, feeds)
        finally:
            self.pool.give_back(instance)
        self.stats.record_execution(self.rows_of(feeds), infer_s)
        return outputs, infer_s

    async def run(self, feeds: Feeds, *, profile: bool = False, profile_runs: int = 0) -> RunOutcome:
        """Run checked, admitted inputs; with ``profile``, alone on a profiling session, ``profile_runs`` times."""
        rows = self.rows_of(feeds)
        submitted = time.perf_counter()
        if profile:
            assert self.profiler is not None
            loop = asyncio.get_running_loop()
            runs = profile_runs or min(self.config.profile_runs, self.config.max_profile_runs)
            done = await loop.run_in_executor(self._executor, self.profiler.run, feeds, runs)
            # Queue: the executor and reading the trace; setup (session build, warm-up) is its own figure.
            queued_s = max(0.0, time.perf_counter() - submitted - done.run_s - done.setup_s)
            self.stats.record_execution(rows, done.run_s / runs)
            return RunOutcome(done.outputs, queued_s, done.run_s, rows, done.profile, done.setup_s)
        if self.batcher is not None and rows <= self.batcher.max_batch:
            queue_limit = self.batching.max_queue_size
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
        if self.profiler is not None:
            self.profiler.close()
