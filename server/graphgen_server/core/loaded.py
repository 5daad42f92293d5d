"""Loading one model version: its files and configuration made into a frozen :class:`LoadedVersion`.

:func:`load_version` builds the instances' onnxruntime sessions, reads what the model takes and
gives (checked against config.pbtxt), its preprocessing and labels, the provider it runs on and
why, warms every instance up, chooses dynamic batching and writes the configuration it enforces;
anything it cannot honour raises (the version is then not ready, with the reason). What it returns
never changes while the version serves: the per-request state (queue, statistics, batcher) is the
:class:`~graphgen_server.core.model_version.ModelVersion`'s.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from graphgen.metadata import ARCHITECTURE, MetadataError, Preprocess, random_weights_note
from graphgen.onnx_io import ModelFileError, check_model_file
from graphgen.preprocess import labels_for
from graphgen.profiling import cuda as gpu_runtime
from graphgen_protos import model_config_pb2 as mc
from graphgen_server.config import ServerConfig
from graphgen_server.core import providers
from graphgen_server.core.batching import BatchingChoice, Feeds, batching_choice
from graphgen_server.core.cpus import available_cpus, threads_per_instance
from graphgen_server.core.device_io import InstanceStream
from graphgen_server.core.instances import SESSION_PARAMETERS, Instance, Planned, plan_instances, session_options
from graphgen_server.core.profiler import Profiler
from graphgen_server.repository.layout import ModelFile
from graphgen_server.repository.model_config import (
    BACKEND,
    CONFIG_FILE,
    PLATFORM,
    ConfigError,
    ReadConfig,
    ServedTensor,
    batch_limit,
    data_type,
    effective_policy,
    serve_tensors,
    warmup_feeds,
)
from graphgen_server.tensors import TensorInfo, describe

log = logging.getLogger("graphgen_server")

TIMED_WARMUP_RUNS = 5
INLINE_RUN_S = 0.001  # the longest run made on the event loop (see _inline_rows)
# config.pbtxt's onnxruntime parameter for the threads, which wins over the server's choice (as in Triton)
INTRA_OP_PARAMETER = "intra_op_thread_count"


@dataclass(frozen=True)
class Signature:
    """What a version takes and gives, as served (config.pbtxt's dims and reshape applied)."""

    served_inputs: tuple[ServedTensor, ...]
    served_outputs: tuple[ServedTensor, ...]
    inputs: tuple[TensorInfo, ...]  # the shapes clients see, in the model's order
    outputs: tuple[TensorInfo, ...]
    max_batch_size: int  # as enforced; 0: no batch dimension

    @classmethod
    def of(
        cls, served_inputs: list[ServedTensor], served_outputs: list[ServedTensor], max_batch_size: int
    ) -> Signature:
        inputs = tuple(t.info for t in served_inputs)
        outputs = tuple(t.info for t in served_outputs)
        return cls(tuple(served_inputs), tuple(served_outputs), inputs, outputs, max_batch_size)

    @property
    def batched(self) -> bool:
        """The first dimension of every input and output is the batch."""
        return self.max_batch_size > 0


@dataclass(frozen=True)
class LoadedVersion:
    """What loading a version made of its files and configuration; it does not change while it serves."""

    instances: tuple[Instance, ...]  # one onnxruntime session each (config.pbtxt's instance_group)
    signature: Signature
    metadata: Mapping[str, str]  # the model's custom metadata (graphgen.* keys)
    image_spec: Preprocess | None  # how encoded images become its input (None: tensors only)
    labels: tuple[str, ...]
    num_classes: int  # the first output's last dimension (0: not a classifier)
    provider: str  # the execution provider the first instance runs on
    provider_reason: str
    batching: BatchingChoice
    config: mc.ModelConfig  # the configuration enforced: what the ModelConfig RPC answers
    profiler: Profiler  # on the first instance's own providers and device
    inline_rows: int = 0  # runs of at most this many rows happen on the event loop (0: all on worker threads)

    def close(self) -> None:
        """Free the profiler, the sessions and their CUDA streams (the version no longer serves)."""
        self.profiler.close()
        for instance in self.instances:
            instance.close()

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.signature.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.signature.outputs

    @property
    def input(self) -> TensorInfo:
        """The only input (models served by Classify take one)."""
        return self.signature.inputs[0]

    @property
    def batched(self) -> bool:
        return self.signature.batched

    @property
    def max_batch_size(self) -> int:
        return self.signature.max_batch_size

    def rows_of(self, feeds: Feeds) -> int:
        """Rows of a checked request: its batch size, or 1 for a model without a batch dimension."""
        return int(next(iter(feeds.values())).shape[0]) if self.signature.batched else 1

    def run_sync(self, instance: Instance, feeds: Feeds) -> tuple[list[np.ndarray], float]:
        """Run ``feeds`` on ``instance``: the outputs in the served shapes, and onnxruntime's seconds (blocking)."""
        return run_sync(self.signature, instance, feeds)


def _reshaped(array: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    """``array`` in ``shape`` (None: the batch, or a dimension of any size, taken from the data)."""
    if shape and shape[0] is None:
        return array.reshape((array.shape[0], *(-1 if d is None else d for d in shape[1:])))
    return array.reshape(tuple(-1 if d is None else d for d in shape))


def run_sync(signature: Signature, instance: Instance, feeds: Feeds) -> tuple[list[np.ndarray], float]:
    session = instance.session
    for tensor in signature.served_inputs:  # config.pbtxt's reshape: the request's shape to the model's
        if tensor.model_shape is not None:
            feeds = {**feeds, tensor.info.name: _reshaped(feeds[tensor.info.name], tensor.model_shape)}
    names = [t.name for t in signature.outputs]
    started = time.perf_counter()
    if instance.io_binding and instance.stream is not None:
        # On the instance's own stream: copies in, a run that returns once queued, copies out, one sync.
        outputs = instance.stream.run(session, feeds, names, [t.dtype for t in signature.outputs])
    elif instance.io_binding:
        # Explicit binding on CUDA, onnxruntime's way: each input goes to the device in one copy
        # (at bind time, on the legacy default stream) and the outputs come back in one copy each.
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
    for index, tensor in enumerate(signature.served_outputs):  # the model's shape back to the config's dims
        if tensor.model_shape is not None:
            outputs[index] = _reshaped(outputs[index], tensor.info.shape)
    return outputs, elapsed


def _inline_rows(signature: Signature, instances: list[Instance], warmup: Feeds, notes: list[str]) -> int:
    """How many rows a run may have and still be run on the event loop itself (0: none may).

    A hop to a worker thread and back costs about 50 µs of CPU (futures, a wake-up of the loop
    through its self-pipe, the GIL changing hands twice): as much as a small model's whole run.
    Where this process runs one instance of the version (one run at a time, as on the loop), a
    run expected to take at most INLINE_RUN_S (the fastest of a few warm-up runs of one row,
    robust to a busy machine, times the rows) runs on the loop instead; the loop then answers
    nothing else for that long (health checks included: bench/dataplane.py measures them under
    load). With more instances here, runs go to worker threads so that they overlap, as
    instance_group's count says; GPU instances never run on the loop: their runs wait for the device.
    """
    if len(instances) > 1 or any(
        i.io_binding or i.stream is not None or providers.CUDA in map(providers.provider_name, i.providers)
        for i in instances
    ):
        return 0
    fastest = min(run_sync(signature, instances[0], warmup)[1] for _ in range(TIMED_WARMUP_RUNS))
    rows = int(INLINE_RUN_S / max(fastest, 1e-9))
    if rows:
        notes.append(f"runs of up to {rows} row(s) on the event loop (fastest warm-up run {fastest * 1e3:.2f} ms)")
    return rows


def make_session_options(server: ServerConfig, settings: ReadConfig, threads: int = 0) -> ort.SessionOptions:
    """The server's session settings and config.pbtxt's parameters (the profiler extends them);
    ``threads``: the intra-op threads derived for this model where neither sets them."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the server logs what matters itself
    if server.intra_op_threads or threads:
        options.intra_op_num_threads = server.intra_op_threads or threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if server.spin_threads else "0")
    return session_options(options, settings.config.parameters, [])


def load_version(
    file: ModelFile, settings: ReadConfig, server: ServerConfig, choice: providers.ProviderChoice
) -> LoadedVersion:
    """Load one version; raises whatever keeps it from serving (the caller makes that its reason)."""
    name, version, path = file.name, str(file.version), file.path
    if file.problem:
        raise ModelFileError(file.problem)
    check_model_file(path)  # onnxruntime must not follow external data out of the model's directory
    config = settings.config
    notes: list[str] = []  # what the load line says beside the provider and batching
    if settings.ignored:  # Triton's fields that graphgen does not honour: said loudly, once per load
        what = "config.pbtxt fields" if settings.source == CONFIG_FILE else f"fields of {settings.source}"
        log.warning("model %s v%s: ignored %s: %s", name, version, what, ", ".join(settings.ignored))
    session_options(ort.SessionOptions(), config.parameters, notes)  # refuses bad values, notes the rest
    plan = plan_instances(name, config, server, choice)
    notes += plan.notes
    here, everywhere = plan.here(server.frontends, server.frontend_index), plan.server_wide(server.frontends)
    if server.frontends > 1:
        notes.append(
            f"front-end {server.frontend_index} of {server.frontends} runs {len(here)} of the server's "
            f"{len(everywhere)} instance(s)" + (" (one per front-end)" if len(everywhere) > len(plan.groups) else "")
        )
    derive = not server.intra_op_threads and INTRA_OP_PARAMETER not in config.parameters
    cpus = available_cpus()
    # onnxruntime's default is a thread per core of the machine, not of the container: the
    # instances share the CPUs the process may use instead. A front-end's instances get all of
    # them: every call of one connection reaches the same front-end (SO_REUSEPORT balances
    # connections, and tritonclient and perf_analyzer hold one for up to 6 clients), so dividing the
    # CPUs among front-ends would leave such a client a fraction of the machine on a large model.
    threads = threads_per_instance(cpus, len(here)) if derive else 0
    instances = _instances(path, here, _options(server, settings, threads), server, notes)
    try:
        shared = threads_per_instance(cpus / server.frontends, len(here))
        if derive and shared < threads and _fast(instances[0]):
            # A run that short gains nothing from a thread pool whose hand-offs cost as much as the
            # run, and every front-end runs its own at once: the CPUs are divided among them instead.
            _close(instances)
            threads = shared
            instances = _instances(path, here, _options(server, settings, threads), server, [])
            notes.append(
                f"{threads} intra-op thread(s) per instance ({cpus:g} CPUs / {server.frontends} front-ends / "
                f"{len(here)} instance(s): runs under {INLINE_RUN_S * 1e3:g} ms)"
            )
        elif derive:
            alone = " (each front-end's)" if server.frontends > 1 else ""
            notes.append(f"{threads} intra-op thread(s) per instance ({cpus:g} CPUs{alone} / {len(here)} instance(s))")
        options = _options(server, settings, threads)
        return _loaded(file, settings, server, choice, instances, everywhere, options, notes)
    except BaseException:
        _close(instances)  # their CUDA streams are not left behind
        raise


def _options(server: ServerConfig, settings: ReadConfig, threads: int) -> functools.partial[ort.SessionOptions]:
    return functools.partial(make_session_options, server, settings, threads)


def _instances(path, here: list[Planned], make_options, server: ServerConfig, notes: list[str]) -> list[Instance]:
    """A session for each instance planned in this process (those made are closed if one fails)."""
    instances: list[Instance] = []
    try:
        for instance_name, kind, gpu, chosen in here:
            instances.append(_instance(path, make_options, instance_name, kind, gpu, chosen, server, notes))
    except BaseException:
        _close(instances)
        raise
    return instances


def _close(instances: list[Instance]) -> None:
    for instance in instances:
        instance.close()


def _fast(first: Instance) -> bool:
    """Whether ``first``, on the CPU, runs one row within INLINE_RUN_S (the fastest of a few runs)."""
    if providers.CUDA in map(providers.provider_name, first.providers):
        return False
    inputs = [TensorInfo.from_ort(a) for a in first.session.get_inputs()]
    feeds = {t.name: np.zeros([d or 1 for d in t.shape], t.dtype) for t in inputs}
    first.session.run(None, feeds)  # (first-run allocations)
    fastest = float("inf")
    for _ in range(TIMED_WARMUP_RUNS):
        start = time.perf_counter()
        first.session.run(None, feeds)
        fastest = min(fastest, time.perf_counter() - start)
    return fastest <= INLINE_RUN_S


def _instance(
    path, make_options, name: str, kind, gpu: int | None, chosen: list, server: ServerConfig, notes: list[str]
) -> Instance:
    """One instance's session, on a CUDA stream of its own where that can be had; refused if CUDA fell back."""
    on_cuda = any(providers.provider_name(p) == providers.CUDA for p in chosen)
    stream, asked = None, chosen
    if on_cuda:
        stream = _stream(gpu if gpu is not None else server.cuda.device_id or 0, notes)
        if stream is not None:
            asked = [
                (p[0], {**p[1], "user_compute_stream": stream.handle})
                if providers.provider_name(p) == providers.CUDA and isinstance(p, tuple)
                else p
                for p in chosen
            ]
    try:
        # enable_fallback=0: onnxruntime's Python layer would otherwise retry a failing CUDA or
        # TensorRT session on CPU (or on CUDA without the options), saying so on stdout only.
        session = ort.InferenceSession(str(path), make_options(), providers=asked, enable_fallback=0)
        notes += providers.check_session(name, chosen, session)
    except BaseException:
        if stream is not None:
            stream.close()
        raise
    bind = on_cuda and server.cuda.io_binding
    return Instance(name, session, kind, gpu, bind, providers=chosen, stream=stream)


def _stream(device: int, notes: list[str]) -> InstanceStream | None:
    """A stream of the instance's own, or None (and a note, once) where cuda-bindings cannot make one."""
    unavailable = gpu_runtime.cuda_runtime_unavailable_reason()  # probed once per process
    if unavailable is None:
        return InstanceStream(device)
    note = f"no CUDA stream of its own per instance ({unavailable}): onnxruntime's, inputs bound from host memory"
    if note not in notes:
        notes.append(note)
    return None


def _loaded(
    file: ModelFile,
    settings: ReadConfig,
    server: ServerConfig,
    choice: providers.ProviderChoice,
    instances: list[Instance],
    everywhere: list[Planned],  # every instance server-wide (of every front-end process)
    make_options,
    notes: list[str],
) -> LoadedVersion:
    name, version, path = file.name, str(file.version), file.path
    config = settings.config
    first = instances[0].session
    model_inputs = [TensorInfo.from_ort(a) for a in first.get_inputs()]
    model_outputs = [TensorInfo.from_ort(a) for a in first.get_outputs()]
    max_batch_size = batch_limit(settings, [*model_inputs, *model_outputs], server.max_images)
    batched = max_batch_size > 0
    signature = Signature.of(
        serve_tensors(config.input, model_inputs, batched, "input"),
        serve_tensors(config.output, model_outputs, batched, "output"),
        max_batch_size,
    )
    inputs, outputs = signature.inputs, signature.outputs
    metadata = dict(first.get_modelmeta().custom_metadata_map)
    image_spec = None
    if len(inputs) == 1 and inputs[0].datatype == "FP32":
        try:
            image_spec = Preprocess.from_metadata(metadata)
        except MetadataError as error:  # tensors only, no images
            if ARCHITECTURE in metadata:  # built by graphgen, yet its preprocessing cannot be read
                log.warning("model %s v%s takes tensors only, no images: %s", name, version, error)
    classes = outputs[0].shape[-1] if outputs and outputs[0].shape else None
    num_classes = classes or 0
    labels = tuple(labels_for(metadata, num_classes)) if classes else ()
    provider, provider_reason = first.get_providers()[0], choice.reason
    warmup = {t.name: np.zeros([d or 1 for d in t.shape], t.dtype) for t in inputs}
    for instance in instances:
        run_sync(signature, instance, warmup)  # first-run allocations happen now, not in a request
    inline_rows = _inline_rows(signature, instances, warmup, notes)
    for entry in config.model_warmup:  # config.pbtxt's warm-up runs, before the model is ready
        feeds = warmup_feeds(entry, list(inputs), batched, path.parent.parent / "warmup")
        runs = max(entry.count, 1)
        try:
            for instance in instances:
                for _ in range(runs):
                    run_sync(signature, instance, feeds)
        except Exception as error:
            raise ConfigError(f"model_warmup {entry.name!r} failed: {error}") from None
        notes.append(f"warm-up {entry.name!r}: {runs} run(s) on each instance")
    batching = batching_choice(settings, batched, max_batch_size, server, provider)
    if batching.max_batch > 1 and server.frontends > 1:
        notes.append(f"dynamic batches formed within each of the {server.frontends} front-end processes")
    loaded = LoadedVersion(
        instances=tuple(instances),
        signature=signature,
        metadata=metadata,
        image_spec=image_spec,
        labels=labels,
        num_classes=num_classes,
        provider=provider,
        provider_reason=provider_reason,
        batching=batching,
        config=effective_config(file, settings, signature, batching, everywhere),
        # The first instance's own providers: its device, its accelerators, CPU for a KIND_CPU model.
        profiler=Profiler(path, instances[0].providers, make_options, warmup, nice=server.profile_nice),
        inline_rows=inline_rows,
    )
    if (weights := random_weights_note(metadata)) is not None:
        notes.insert(0, weights)
    shown = "; ".join(f"{t.name} {t.datatype} {describe(t.shape)}" for t in inputs)
    log.info(
        "model %s v%s: %s (%s); %d instance(s); input %s; %s%s",
        name,
        version,
        provider,
        provider_reason,
        len(instances),
        shown,
        batching.describe(),
        "".join(f"; {note}" for note in notes),
    )
    return loaded


def effective_config(
    file: ModelFile, settings: ReadConfig, signature: Signature, batching: BatchingChoice, instances: list[Planned]
) -> mc.ModelConfig:
    """What a loaded version enforces, as a ModelConfig (what the ModelConfig RPC answers); ``instances``:
    every session server-wide (with several front-end processes, theirs together)."""
    config = mc.ModelConfig(
        name=file.name,
        platform=PLATFORM,
        backend=BACKEND,
        max_batch_size=signature.max_batch_size,
        default_model_filename=file.path.name,
    )
    config.version_policy.CopyFrom(effective_policy(settings))
    skip = 1 if signature.batched else 0
    for served, entries in ((signature.served_inputs, config.input), (signature.served_outputs, config.output)):
        for tensor in served:
            entry = entries.add(name=tensor.info.name, data_type=data_type(tensor.info.datatype))
            entry.dims.extend(-1 if d is None else d for d in tensor.info.shape[skip:])
            if tensor.model_shape is not None:
                entry.reshape.shape.extend(-1 if d is None else d for d in tensor.model_shape[skip:])
    if batching.max_batch > 1:
        config.dynamic_batching.preferred_batch_size.extend(batching.preferred)
        config.dynamic_batching.max_queue_delay_microseconds = round(batching.delay_s * 1e6)
        config.dynamic_batching.default_queue_policy.max_queue_size = batching.max_queue_size
    groups: dict[tuple[str, int], mc.ModelInstanceGroup] = {}
    for instance_name, kind, gpu, _ in instances:
        group_name = instance_name.rsplit("_", 1)[0]
        group = groups.setdefault((group_name, kind), mc.ModelInstanceGroup(name=group_name, kind=kind))
        group.count += 1
        if gpu is not None and gpu not in group.gpus:
            group.gpus.append(gpu)
    if any(g.gpus for g in groups.values()):  # count is per GPU listed
        for group in groups.values():
            group.count //= max(len(group.gpus), 1)
    config.instance_group.extend(groups.values())
    honoured = settings.config.parameters
    for key in honoured:
        if key in SESSION_PARAMETERS:
            config.parameters[key].CopyFrom(honoured[key])
    config.model_warmup.extend(settings.config.model_warmup)
    if settings.config.HasField("optimization"):
        config.optimization.CopyFrom(settings.config.optimization)
    return config
