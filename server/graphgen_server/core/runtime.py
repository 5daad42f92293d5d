"""The runtime below every protocol: ``classify()`` and ``infer()`` — Python values in, numpy out.

A call names a model and hands over its inputs as :class:`~graphgen_server.tensors.InputTensor`
(or encoded images); the runtime finds the ready version, checks the inputs against it
(:mod:`graphgen_server.core.requests`, every check in one place), admits the
rows to the model's queue (or refuses at once), hops to a worker thread (decoding, onnxruntime),
times each stage and records the request in the model's statistics, success or failure. The
servicers (gRPC, HTTP) only translate their messages to these calls and the results back; every
failure is an exception of :mod:`graphgen_server.core.errors`, turned into a status code by the
front-ends (:mod:`graphgen_server.frontends.status`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from graphgen_server.config import ServerConfig
from graphgen_server.core import providers, requests, serverwide
from graphgen_server.core.api import Classified, ClassScore, Inferred, OutputTensor, Timings
from graphgen_server.core.control import Control, LocalControl
from graphgen_server.core.errors import InvalidArgument, NotFound, ServingError, failure_reason
from graphgen_server.core.loaded import LoadedVersion
from graphgen_server.core.model_version import ModelVersion, RunOutcome
from graphgen_server.core.requests import NO_PROFILE, Profiling, RequestedOutput
from graphgen_server.core.statistics import RequestRecord, VersionStats
from graphgen_server.repository.layout import model_names, scan
from graphgen_server.repository.model_config import plan_model
from graphgen_server.tensors import InputTensor

log = logging.getLogger("graphgen_server")

CLASSIFICATION_DATATYPE = "BYTES"


RequestListener = Callable[[ModelVersion, RequestRecord], None]


class LocalRuntime:
    """Every model version of the repository, and the calls on them, in this process (a :class:`Runtime`)."""

    def __init__(self, config: ServerConfig, channel: Control | None = None) -> None:
        self.config = config
        # Server-wide operations (statistics summed over every front-end process, model control).
        self.channel: Control = channel or LocalControl()
        serverwide.register(self.channel, self)
        self.executor = ThreadPoolExecutor(config.workers, thread_name_prefix="infer")
        self.models: dict[str, dict[str, ModelVersion]] = {}
        self.retiring: set[ModelVersion] = set()  # left the table, closed once their calls finish
        self.choice: providers.ProviderChoice | None = None
        # Called for every finished request (metrics exporters); must not block.
        self.listeners: list[RequestListener] = []

    def load(self) -> None:
        """Load every model; raises DeviceError/RepositoryError for what stops the whole server."""
        self.choice = providers.choose(self.config.device, self.config.cuda)
        planned = [
            entry for name in model_names(self.config.repository) for entry in plan_model(self.config.repository, name)
        ]
        if not planned:
            scan(self.config.repository)  # raises RepositoryError saying what a repository holds
        for file, settings in planned:
            model = ModelVersion(file, self.config, self.executor, settings)
            model.load(self.choice)
            self.models.setdefault(file.name, {})[model.version] = model

    # -- finding models -------------------------------------------------------------------
    def all(self) -> list[ModelVersion]:
        return [m for versions in self.models.values() for m in versions.values()]

    def find(self, name: str, version: str = "") -> ModelVersion:
        """The named version (empty: the newest ready one, else the newest); NotFound otherwise."""
        if not name:
            raise InvalidArgument("model", "no model name given")
        if version and not (version.isascii() and version.isdigit()):
            # (Triton's GetModelVersionFromString refuses it alike: INVALID_ARG, not NOT_FOUND)
            raise InvalidArgument("version", f"{version!r} is not a version number (an integer, 0 or more)")
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

    def versions(self, name: str) -> list[str]:
        """The versions of model ``name`` in the table, in order (NotFound for an unknown model)."""
        if name not in self.models:
            self.find(name)  # raises NotFound naming the models there are
        return sorted(self.models[name], key=int)

    def ready(self, name: str, version: str = "") -> ModelVersion:
        """The named version (as :meth:`find`), ModelUnavailable with the reason unless it is ready.

        With no version named and none ready: NotFound, as Triton answers ("has no available
        versions", its ModelLifeCycle::GetModel), with the newest version's reason.
        """
        model = self.find(name, version)
        if not version and not model.ready:
            raise NotFound(f"model {name!r} has no ready version (version {model.version}: {model.reason})")
        model.served()  # raises ModelUnavailable
        return model

    def refused(self, name: str, version: str, error: BaseException) -> None:
        """Counts a request a front-end refused before it reached infer or classify, once, with Triton's reason."""
        try:
            model = self.find(name, version)
        except ServingError:
            return  # no such model: nothing to count it in (as a call to it)
        self._publish(model, RequestRecord(ok=False, total_s=0.0, failure=failure_reason(error)))

    def _hold(self, name: str, version: str) -> ModelVersion:
        """The ready version, held by the call until it releases it: a version unloaded meanwhile is
        closed only after that (the calls below release it in their ``finally``)."""
        model = self.ready(name, version)
        model.users += 1
        return model

    async def statistics(self, name: str = "", version: str = "") -> list[VersionStats]:
        """The named version's counts, summed over every front-end process (see :class:`Runtime`)."""
        return await serverwide.statistics(self.channel, name, version)

    # -- calls ----------------------------------------------------------------------------
    async def classify(
        self,
        name: str,
        version: str = "",
        *,
        images: Sequence[bytes] = (),
        tensor: InputTensor | None = None,
        top_k: int = 5,
        profile: Profiling = NO_PROFILE,
    ) -> Classified:
        """The top ``top_k`` classes of each encoded image (or of each row of a preprocessed tensor)."""
        arrived = time.perf_counter()
        model = self._hold(name, version)
        try:
            return await self._classify(model, arrived, images, tensor, top_k, profile)
        except BaseException as error:
            self._failed(model, arrived, error)
            raise
        finally:
            model.release()

    async def _classify(
        self,
        model: ModelVersion,
        arrived: float,
        images: Sequence[bytes],
        tensor: InputTensor | None,
        top_k: int,
        profile: Profiling,
    ) -> Classified:
        loaded = model.served()
        requests.check_classify(model.name, loaded, images, tensor, top_k, profile, self.config)
        if tensor is not None:
            feeds = requests.checked_feeds(model.name, loaded, [tensor], self.config)
            with model.admit(loaded.rows_of(feeds)):
                preprocessed = time.perf_counter()
                outcome = await model.run(feeds, profile=profile.wanted, profile_runs=profile.runs)
        else:
            requests.check_images(model.name, loaded, images, self.config)
            # Admitted before decoding: requests beyond the queue bound are refused at once
            # instead of waiting, encoded images in memory, for a decoding thread.
            with model.admit(len(images)):
                loop = asyncio.get_running_loop()
                decode = functools.partial(requests.images_to_array, model.name, loaded, list(images), self.config)
                array = await loop.run_in_executor(self.executor, decode)
                preprocessed = time.perf_counter()
                outcome = await model.run({loaded.input.name: array}, profile=profile.wanted, profile_runs=profile.runs)
        inferred = time.perf_counter()
        results = top_classes(outcome.outputs[0], top_k, loaded.labels)
        timings = self._succeeded(model, outcome, arrived, preprocessed, inferred, len(results), profile.wanted)
        return Classified(model.name, model.version, loaded.provider, results, timings, outcome.profile)

    async def infer(
        self,
        name: str,
        version: str = "",
        *,
        inputs: Sequence[InputTensor],
        outputs: Sequence[RequestedOutput] = (),
        profile: Profiling = NO_PROFILE,
    ) -> Inferred:
        """Run the model on ``inputs``; the requested outputs (all, in the model's order, if none named)."""
        arrived = time.perf_counter()
        model = self._hold(name, version)
        try:
            return await self._infer(model, arrived, inputs, outputs, profile)
        except BaseException as error:
            self._failed(model, arrived, error)
            raise
        finally:
            model.release()

    async def _infer(
        self,
        model: ModelVersion,
        arrived: float,
        inputs: Sequence[InputTensor],
        outputs: Sequence[RequestedOutput],
        profile: Profiling,
    ) -> Inferred:
        loaded = model.served()
        feeds = requests.checked_feeds(model.name, loaded, inputs, self.config)
        wanted = requests.checked_outputs(model.name, loaded, outputs)
        requests.check_profile(profile, self.config)
        with model.admit(loaded.rows_of(feeds)):
            parsed = time.perf_counter()
            outcome = await model.run(feeds, profile=profile.wanted, profile_runs=profile.runs)
        inferred = time.perf_counter()
        results = []
        for index, k in wanted:
            info, values = loaded.outputs[index], outcome.outputs[index]
            if k:
                results.append(OutputTensor(info.name, CLASSIFICATION_DATATYPE, classification(values, k, loaded)))
            else:
                results.append(OutputTensor(info.name, info.datatype, values))
        timings = self._succeeded(model, outcome, arrived, parsed, inferred, loaded.rows_of(feeds), profile.wanted)
        return Inferred(model.name, model.version, results, timings, outcome.profile)

    def _succeeded(
        self,
        model: ModelVersion,
        outcome: RunOutcome,
        arrived: float,
        prepared: float,
        inferred: float,
        rows: int,
        profiled: bool,
    ) -> Timings:
        """Record a request that succeeded in the model's statistics: its timings from the run's
        outcome and the times its stages ended (the request's answer is all that is left to do)."""
        now = time.perf_counter()
        timings = Timings(
            outcome.queue_s,
            prepared - arrived,
            outcome.infer_s,
            now - inferred,
            now - arrived,
            outcome.batch_size,
            outcome.profile_setup_s,
            outcome.profile_wait_s,
        )
        self._publish(
            model,
            RequestRecord(
                ok=True,
                total_s=timings.total_s,
                queue_s=timings.queue_s,
                input_s=timings.input_s,
                infer_s=timings.infer_s,
                output_s=timings.output_s,
                rows=rows,
                batch_size=timings.batch_size,
                profiled=profiled,
            ),
        )
        return timings

    def _failed(self, model: ModelVersion, arrived: float, error: BaseException) -> None:
        """Record a request that failed, whatever the failure (the success is recorded last, so a
        request is counted once)."""
        self._publish(
            model, RequestRecord(ok=False, total_s=time.perf_counter() - arrived, failure=failure_reason(error))
        )

    def _publish(self, model: ModelVersion, record: RequestRecord) -> None:
        model.stats.record_request(record)
        for listener in self.listeners:
            try:
                listener(model, record)
            except Exception:  # a broken exporter must not fail requests
                log.exception("request listener failed")

    async def close(self) -> None:
        for model in [*self.all(), *self.retiring]:
            await model.close()
        self.executor.shutdown(wait=True, cancel_futures=True)


def top_classes(logits: np.ndarray, k: int, labels: Sequence[str]) -> list[list[ClassScore]]:
    """Per row: the k most probable classes with their softmax probability, best first."""
    logits = logits.reshape(logits.shape[0], -1)
    if logits.dtype != np.float64:
        logits = logits.astype(np.float32)  # (fp16 logits: the softmax in float32)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    k = min(k, logits.shape[1])
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        [ClassScore(int(i), labels[i] if i < len(labels) else str(i), float(row[i])) for i in indices]
        for row, indices in zip(probabilities, best)
    ]


def classification(values: np.ndarray, k: int, model: LoadedVersion) -> np.ndarray:
    """Per row, the k largest values as b"value:index:label" (Triton's format, best first).

    Rows are the batch dimension where the model has one; otherwise the whole tensor is one row
    and the result has shape [k].
    """
    rows = values.reshape(values.shape[0], -1) if model.batched else values.reshape(1, -1)
    best = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    labels = model.labels
    entries = np.array(
        [
            [f"{row[i]:f}:{i}{':' + labels[i] if i < len(labels) else ''}".encode() for i in indices]
            for row, indices in zip(rows, best)
        ],
        dtype=object,
    )
    return entries if model.batched else entries[0]
