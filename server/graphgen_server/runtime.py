"""The runtime below the gRPC servicers: sessions, batching, profiling, limits — numpy in, numpy out.

One onnxruntime session serves each model version; runs happen on worker threads (onnxruntime
releases the GIL), never on the event loop, so several requests are in flight at once. A model
that fails to load stays in the table, not ready, with its reason; the others serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from graphgen.metadata import ARCHITECTURE, MetadataError, Preprocess
from graphgen.onnx_io import ModelFileError, check_model_file
from graphgen.preprocess import ImageError, decode_image, image_to_tensor, labels_for
from graphgen.profiling.summary import Profile
from graphgen_server import providers
from graphgen_server.batching import DynamicBatcher
from graphgen_server.config import ServerConfig
from graphgen_server.errors import InvalidArgument, ModelUnavailable, NotFound, QueueFull
from graphgen_server.profiling import Profiler
from graphgen_server.repository import ModelFile, scan
from graphgen_server.stats import ModelStats

log = logging.getLogger("graphgen_server")

_ORT_TYPES = {"tensor(float)": np.dtype(np.float32)}
MAX_RANK = 8  # more dimensions than any image model takes (numpy's own limit is 64)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]  # None: any size (a symbolic dimension)


@dataclass(frozen=True)
class InferOutcome:
    outputs: list[np.ndarray]  # in the order of ModelVersion.outputs
    queue_s: float
    infer_s: float
    batch_size: int
    profile: Profile | None = None
    profile_setup_s: float = 0.0  # a profiled call: waiting for its profiling session, and warm-up runs


def _tensor_info(arg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
    return TensorInfo(arg.name, _ORT_TYPES.get(arg.type, np.dtype(object)), shape)


class ModelVersion:
    """One version of one model: its session, what it expects, and its batcher and profiler."""

    def __init__(self, file: ModelFile, config: ServerConfig, executor: ThreadPoolExecutor) -> None:
        self.name, self.version, self.path = file.name, str(file.version), file.path
        self.file = file
        self.config = config
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
        self.input = TensorInfo("", np.dtype(np.float32), ())
        self.outputs: list[TensorInfo] = []
        self.dynamic_batch = False
        self.num_classes = 0
        self._choice: providers.ProviderChoice | None = None
        self._io_binding = False

    # -- loading --------------------------------------------------------------------------
    def load(self, choice: providers.ProviderChoice) -> None:
        try:
            self._load(choice)
        except Exception as error:  # any load failure leaves this model not ready
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self.ready, self.reason = False, f"failed to load {self.path}: {message}"
            log.error("model %s v%s NOT READY: %s", self.name, self.version, self.reason)

    def _session_options(self) -> ort.SessionOptions:
        """The server's session settings (the profiler extends them with its own)."""
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: the server logs what matters itself
        if self.config.intra_op_threads:
            options.intra_op_num_threads = self.config.intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.config.spin_threads else "0")
        return options

    def _make_session(self) -> ort.InferenceSession:
        assert self._choice is not None, "load() chooses the providers first"
        return ort.InferenceSession(str(self.path), self._session_options(), providers=self._choice.providers)

    def _load(self, choice: providers.ProviderChoice) -> None:
        if self.file.problem:
            raise ModelFileError(self.file.problem)
        check_model_file(self.path)  # onnxruntime must not follow external data out of the model's directory
        self._choice = choice
        self.session = self._make_session()
        inputs = [_tensor_info(a) for a in self.session.get_inputs()]
        if len(inputs) != 1 or inputs[0].dtype != np.float32:
            raise ValueError(f"graphgen serves models with one float32 input; this one has {inputs}")
        self.input = inputs[0]
        self.outputs = [_tensor_info(a) for a in self.session.get_outputs()]
        self.dynamic_batch = bool(self.input.shape) and self.input.shape[0] is None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        try:
            self.image_spec = Preprocess.from_metadata(self.metadata)
        except MetadataError as error:  # tensors only, no images
            if ARCHITECTURE in self.metadata:  # built by graphgen, yet its preprocessing cannot be read
                log.warning("model %s v%s takes tensors only, no images: %s", self.name, self.version, error)
        classes = self.outputs[0].shape[-1] if self.outputs[0].shape else None
        self.num_classes = classes or 0
        self.labels = labels_for(self.metadata, self.num_classes) if classes else []
        self.provider, self.provider_reason = providers.describe_session(choice, self.session)
        self._io_binding = self.provider == providers.CUDA and self.config.cuda.io_binding
        warmup = {self.input.name: np.zeros([d or 1 for d in self.input.shape], np.float32)}
        self._run_sync(warmup[self.input.name])  # first-run allocations happen now, not in a request
        if self.dynamic_batch and self.config.batching:
            self.batcher = DynamicBatcher(
                self._run_batch, self.config.max_batch, self.config.batch_delay_us / 1e6, slots=2
            )
        self.profiler = Profiler(self.path, choice.providers, self._session_options, warmup)
        self.ready, self.reason = True, ""
        batching = f"dynamic batching up to {self.config.max_batch}" if self.batcher else "no dynamic batching"
        log.info(
            "model %s v%s: %s (%s); input %s %s; %s",
            self.name, self.version, self.provider, self.provider_reason, self.input.name,
            [d if d else -1 for d in self.input.shape], batching,
        )  # fmt: skip

    # -- running --------------------------------------------------------------------------
    def _run_sync(self, array: np.ndarray) -> tuple[list[np.ndarray], float]:
        session = self.session
        assert session is not None, "only a loaded model runs"
        started = time.perf_counter()
        if self._io_binding:
            # Explicit binding on CUDA: the input goes to the device in one copy and the outputs
            # come back to host memory in one copy each.
            binding = session.io_binding()
            binding.bind_cpu_input(self.input.name, array)
            for output in self.outputs:
                binding.bind_output(output.name, "cpu")
            session.run_with_iobinding(binding)
            outputs = binding.copy_outputs_to_cpu()
        else:
            outputs = session.run(None, {self.input.name: array})
        return outputs, time.perf_counter() - started

    async def _run_batch(self, array: np.ndarray) -> tuple[list[np.ndarray], float]:
        outputs, infer_s = await asyncio.get_running_loop().run_in_executor(self._executor, self._run_sync, array)
        self.stats.record_execution(int(array.shape[0]), infer_s)
        return outputs, infer_s

    @contextlib.contextmanager
    def admit(self, rows: int) -> Iterator[None]:
        """Count ``rows`` images against the model's queue while the block runs; QueueFull if it is full."""
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

    def check_batch(self, array: np.ndarray, field: str) -> None:
        """Refuse an input tensor the model cannot take, naming ``field``."""
        if array.dtype != np.float32:
            raise InvalidArgument(field, f"datatype must be FP32 (float32), got {array.dtype}")
        expected = self.input.shape
        if array.ndim != len(expected):
            raise InvalidArgument(
                field, f"shape {list(array.shape)} has rank {array.ndim}, model expects {_dims(expected)}"
            )
        for axis, (got, want) in enumerate(zip(array.shape, expected)):
            if got < 1 or (want is not None and got != want):
                raise InvalidArgument(field, f"shape {list(array.shape)} does not fit {_dims(expected)} (axis {axis})")
        if array.shape and array.shape[0] > self.config.max_images:
            raise InvalidArgument(field, f"batch of {array.shape[0]} exceeds the limit of {self.config.max_images}")
        # A float64 sum of float32 values cannot overflow: it is finite exactly when every value is.
        if not np.isfinite(array.sum(dtype=np.float64)):
            first = int(np.flatnonzero(~np.isfinite(array))[0])
            raise InvalidArgument(
                field, f"holds NaN or infinite values (the first at flat index {first}); send finite float32 values"
            )

    async def infer(
        self, array: np.ndarray, *, profile: bool = False, profile_runs: int = 0, admitted: bool = False
    ) -> InferOutcome:
        """Run a checked batch; with ``profile``, alone on a profiling session, ``profile_runs`` times.

        ``admitted``: the caller already holds :meth:`admit` for these rows.
        """
        rows = int(array.shape[0]) if array.ndim else 1
        with contextlib.nullcontext() if admitted else self.admit(rows):
            submitted = time.perf_counter()
            if profile:
                assert self.profiler is not None
                loop = asyncio.get_running_loop()
                feeds = {self.input.name: array}
                runs = profile_runs or min(self.config.profile_runs, self.config.max_profile_runs)
                profiled = await loop.run_in_executor(self._executor, self.profiler.run, feeds, runs)
                # Queue: the executor and reading the trace; setup (session build, warm-up) is its own figure.
                queued_s = max(0.0, time.perf_counter() - submitted - profiled.run_s - profiled.setup_s)
                self.stats.record_execution(rows, profiled.run_s / runs)
                return InferOutcome(
                    profiled.outputs, queued_s, profiled.run_s, rows, profiled.profile, profiled.setup_s
                )
            if self.batcher is not None and rows <= self.batcher.max_batch:
                done = await self.batcher.submit(array)
                return InferOutcome(done.outputs, done.queue_s, done.infer_s, done.batch_size)
            outputs, infer_s = await self._run_batch(array)
            total = time.perf_counter() - submitted
            return InferOutcome(outputs, max(0.0, total - infer_s), infer_s, rows)

    def check_profile_runs(self, runs: int, field: str) -> None:
        """Refuse more profiled runs than the server allows (0: its default)."""
        if not 0 <= runs <= self.config.max_profile_runs:
            raise InvalidArgument(
                field,
                f"{runs} runs: a profile takes 1 to {self.config.max_profile_runs} runs (0: the default, "
                f"{self.config.profile_runs})",
            )

    def check_images(self, images: list[bytes]) -> Preprocess:
        """Refuse a list of encoded images this model cannot take (before any is decoded); its image rule."""
        if self.image_spec is None:
            raise InvalidArgument(
                "images", f"model {self.name} has no graphgen preprocessing metadata; send a tensor instead"
            )
        if not images:
            raise InvalidArgument("images", "no image given (send images or a tensor)")
        if len(images) > self.config.max_images:
            raise InvalidArgument("images", f"{len(images)} images exceed the limit of {self.config.max_images}")
        return self.image_spec

    def preprocess(self, images: list[bytes]) -> np.ndarray:
        """Decode and preprocess encoded images into one batch (blocking: call from a worker)."""
        image_spec = self.check_images(images)
        batch = []
        for index, data in enumerate(images):
            try:
                image = decode_image(data, max_pixels=self.config.max_image_pixels)
            except ImageError as error:
                raise InvalidArgument(f"images[{index}]", str(error)) from None
            batch.append(image_to_tensor(image, image_spec))
        array = np.stack(batch)
        self.check_batch(array, "images")
        return array

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


def declared_shape(dims: Sequence[int], field: str) -> tuple[list[int], int]:
    """A request's tensor shape and its element count, refused unless every dimension is positive.

    The count is a Python integer: a shape such as [2**32, 2**32] must not wrap around to a size
    that matches a short buffer.
    """
    shape = list(dims)
    if not shape or len(shape) > MAX_RANK or any(d < 1 for d in shape):
        raise InvalidArgument(f"{field}.shape", f"must list 1 to {MAX_RANK} positive dimensions, got {shape}")
    return shape, math.prod(shape)


def _dims(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


class Runtime:
    """Every model version of the repository."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.executor = ThreadPoolExecutor(config.workers, thread_name_prefix="infer")
        self.models: dict[str, dict[str, ModelVersion]] = {}
        self.retiring: set[ModelVersion] = set()  # left the table, closed once their calls finish
        self.choice: providers.ProviderChoice | None = None

    def load(self) -> None:
        """Load every model; raises DeviceError/RepositoryError for what stops the whole server."""
        self.choice = providers.choose(self.config.device, self.config.cuda)
        for file in scan(self.config.repository):
            model = ModelVersion(file, self.config, self.executor)
            model.load(self.choice)
            self.models.setdefault(file.name, {})[model.version] = model

    def all(self) -> list[ModelVersion]:
        return [m for versions in self.models.values() for m in versions.values()]

    def find(self, name: str, version: str = "") -> ModelVersion:
        """The named version (empty: the newest ready one, else the newest); NotFound otherwise."""
        if not name:
            raise InvalidArgument("model", "no model name given")
        versions = self.models.get(name)
        if versions is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFound(f"model {name!r} is not in the repository (models: {known})")
        if version:
            if version not in versions:
                raise NotFound(f"model {name!r} has no version {version!r} (versions: {', '.join(versions)})")
            return versions[version]
        ordered = sorted(versions.values(), key=lambda m: int(m.version))
        ready = [m for m in ordered if m.ready]
        return (ready or ordered)[-1]

    def ready(self, name: str, version: str = "") -> ModelVersion:
        model = self.find(name, version)
        if not model.ready:
            raise ModelUnavailable(f"model {name!r} version {model.version} is not ready: {model.reason}")
        return model

    @contextlib.asynccontextmanager
    async def use(self, name: str, version: str = "") -> AsyncIterator[ModelVersion]:
        """The ready version, held for the block: a version unloaded meanwhile is closed only after it."""
        model = self.ready(name, version)
        model.users += 1
        try:
            yield model
        finally:
            model.release()

    async def close(self) -> None:
        for model in [*self.all(), *self.retiring]:
            await model.close()
        self.executor.shutdown(wait=True, cancel_futures=True)


def top_classes(logits: np.ndarray, k: int, labels: list[str]) -> list[list[tuple[int, str, float]]]:
    """Per row: the k most probable classes as (index, label, softmax probability), best first."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    k = min(k, logits.shape[1])
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        [(int(i), labels[i] if i < len(labels) else str(i), float(row[i])) for i in indices]
        for row, indices in zip(probabilities, best)
    ]
