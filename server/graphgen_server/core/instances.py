"""A model version's instances (config.pbtxt's ``instance_group``): one onnxruntime session each.

Each instance runs one request (or dynamic batch) at a time, as in Triton; with ``count: 2`` two
run at once on two sessions, and a request takes whichever instance is free first. Where a group
runs (``kind``, ``gpus``), which execution accelerators it asks onnxruntime for
(``optimization.execution_accelerators``) and the onnxruntime session ``parameters`` come from the
configuration; what cannot be used here is said in the load line, never dropped silently. A GPU
group that lists no ``gpus`` gets ``count`` instances on every visible GPU, as Triton places them
(``--device-id`` names one GPU instead); a GPU it lists that is not visible is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import onnxruntime as ort

from graphgen_protos import model_config_pb2 as mc
from graphgen_server.config import ServerConfig
from graphgen_server.core import providers
from graphgen_server.repository.model_config import ConfigError

if TYPE_CHECKING:
    from graphgen_server.core.device_io import InstanceStream

Provider = str | tuple[str, dict[str, str]]
# An instance_group without a count (or no instance_group at all) gets Triton's default for the
# onnxruntime backend: one instance per GPU, two on CPU (SetDefaultInstanceCount in Triton's core),
# so that two requests run at once there as they do under Triton.
DEFAULT_CPU_INSTANCES = 2
# Triton's accelerator names (onnxruntime backend) → onnxruntime providers.
ACCELERATORS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": providers.CUDA,
    "openvino": "OpenVINOExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
}
# Triton's onnxruntime backend parameters honoured here → how each sets the session options.
SESSION_PARAMETERS: dict[str, Callable[[ort.SessionOptions, str], None]] = {
    "intra_op_thread_count": lambda o, v: setattr(o, "intra_op_num_threads", int(v)),
    "inter_op_thread_count": lambda o, v: setattr(o, "inter_op_num_threads", int(v)),
    "execution_mode": lambda o, v: setattr(
        o, "execution_mode", ort.ExecutionMode.ORT_PARALLEL if int(v) else ort.ExecutionMode.ORT_SEQUENTIAL
    ),
    "enable_mem_pattern": lambda o, v: setattr(o, "enable_mem_pattern", _flag(v)),
    "enable_mem_arena": lambda o, v: setattr(o, "enable_cpu_mem_arena", _flag(v)),
}


def _flag(value: str) -> bool:
    if value.lower() in {"1", "true", "on", "yes"}:
        return True
    if value.lower() in {"0", "false", "off", "no"}:
        return False
    raise ValueError(f"{value!r} is not a boolean")


@dataclass
class Instance:
    """One session and where it runs."""

    name: str
    session: ort.InferenceSession
    kind: mc.ModelInstanceGroup.Kind
    gpu: int | None
    io_binding: bool = False  # on CUDA: inputs and outputs bound explicitly (one copy each way)
    runs: int = 0  # runs started (requests spread over the instances: the tests look)
    providers: list[Provider] = field(default_factory=list)  # as asked of onnxruntime (its stream aside)
    stream: InstanceStream | None = None  # on CUDA: the instance's own stream, where cuda-bindings is installed

    def close(self) -> None:
        """Free the session, then the stream it computed on (the version is unloaded: nothing runs)."""
        stream, self.stream = self.stream, None
        if stream is not None:
            self.__dict__.pop("session", None)
            stream.close()


Planned = tuple[str, mc.ModelInstanceGroup.Kind, int | None, list[Provider]]  # name, kind, gpu, providers


@dataclass
class InstancePlan:
    """What the configuration asks for: sessions to make, and the notes for the load line."""

    groups: list[Planned] = field(default_factory=list)  # every instance, server-wide
    notes: list[str] = field(default_factory=list)

    def server_wide(self, frontends: int) -> list[Planned]:
        """Every session the server runs: the configured instances, and where there are fewer than
        front-end processes, one more replica of them per front-end left without one."""
        return [self.groups[k % len(self.groups)] for k in range(max(len(self.groups), frontends))]

    def here(self, frontends: int, index: int) -> list[Planned]:
        """The instances front-end ``index`` of ``frontends`` runs: every ``frontends``-th one, so
        that together they run ``instance_group``'s count (and each front-end at least one)."""
        every = self.server_wide(frontends)
        return [planned for k, planned in enumerate(every) if k % frontends == index]


def plan_instances(
    model_name: str, config: mc.ModelConfig, server: ServerConfig, choice: providers.ProviderChoice
) -> InstancePlan:
    """The sessions ``instance_group`` asks for (Triton's default count where it says none)."""
    plan = InstancePlan()
    groups = list(config.instance_group) or [mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_AUTO)]
    accelerators = config.optimization.execution_accelerators
    for index, group in enumerate(groups):
        name = group.name or f"{model_name}_{index}"
        kind = group.kind
        on_gpu = kind == mc.ModelInstanceGroup.KIND_GPU or (
            kind in (mc.ModelInstanceGroup.KIND_AUTO, mc.ModelInstanceGroup.KIND_MODEL) and choice.wants_cuda
        )
        count = group.count if group.count > 0 else (1 if on_gpu else DEFAULT_CPU_INSTANCES)
        if kind == mc.ModelInstanceGroup.KIND_GPU and not choice.wants_cuda:
            reason = providers.cuda_unavailable_reason() or "the server runs on CPU (--device cpu)"
            raise ConfigError(f"instance_group {name!r} is KIND_GPU, but CUDA cannot be used: {reason}")
        if kind == mc.ModelInstanceGroup.KIND_CPU and group.gpus:
            raise ConfigError(f"instance_group {name!r} is KIND_CPU but lists gpus {list(group.gpus)}")
        wanted = accelerators.gpu_execution_accelerator if on_gpu else accelerators.cpu_execution_accelerator
        extra = _accelerators(wanted, plan.notes)
        gpus = _gpus(name, group, server) if on_gpu else [None]
        for gpu in gpus:
            base: list[Provider] = [providers.CPU]
            if on_gpu:
                options = {**server.cuda.provider_options(), **({"device_id": str(gpu)} if gpu is not None else {})}
                base = [(providers.CUDA, options), providers.CPU]
            actual_kind = mc.ModelInstanceGroup.KIND_GPU if on_gpu else mc.ModelInstanceGroup.KIND_CPU
            plan.groups += [(f"{name}_{i}", actual_kind, gpu, [*extra, *base]) for i in range(count)]
    return plan


def _gpus(name: str, group: mc.ModelInstanceGroup, server: ServerConfig) -> list[int | None]:
    """The GPUs of a GPU group: those it lists, else ``--device-id``, else every visible one (Triton's placement)."""
    visible = providers.visible_devices()  # None: the runtime cannot be asked; onnxruntime will say
    if group.gpus:
        listed = [int(g) for g in group.gpus]
        missing = [g for g in listed if g < 0 or (visible is not None and g >= visible)]
        if missing:
            raise ConfigError(
                f"instance_group {name!r} lists gpus {missing}, but {visible} CUDA device(s) are visible "
                f"(0–{(visible or 1) - 1}; CUDA_VISIBLE_DEVICES renumbers them)"
            )
        return list(listed)
    if server.cuda.device_id is not None:
        return [server.cuda.device_id]
    return list(range(visible)) if visible else [None]


def _accelerators(wanted, notes: list[str]) -> list[Provider]:
    available = ort.get_available_providers()
    chosen: list[Provider] = []
    for accelerator in wanted:
        provider = ACCELERATORS.get(accelerator.name)
        if provider is None:
            notes.append(
                f"execution accelerator {accelerator.name!r} unknown (known: {', '.join(ACCELERATORS)}); not used"
            )
        elif provider not in available:
            notes.append(f"execution accelerator {accelerator.name!r} not used: this onnxruntime has no {provider}")
        elif provider != providers.CUDA:
            chosen.append((provider, dict(accelerator.parameters)))
    return chosen


def session_options(base: ort.SessionOptions, parameters, notes: list[str]) -> ort.SessionOptions:
    """``base`` with config.pbtxt's onnxruntime ``parameters`` applied; ConfigError for a bad value."""
    for key, value in sorted(parameters.items()):
        setter = SESSION_PARAMETERS.get(key)
        if setter is None:
            notes.append(f"parameter {key!r} ignored (honoured: {', '.join(SESSION_PARAMETERS)})")
            continue
        try:
            setter(base, value.string_value)
        except ValueError as error:
            raise ConfigError(f"parameters {key!r}: {value.string_value!r} is not valid ({error})") from None
    return base


class InstancePool:
    """The free instances; ``take`` waits for one (that wait is the request's queue time).

    The instance given back last is taken first: its weights and buffers are still in the CPU's
    caches. Taking them in turn instead made each run of a small model cost 2.5 times the CPU of
    runs on one session (measured here: 570 against 220 µs), every run evicting the other
    session's weights; a second instance is taken only while the first is busy.
    """

    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances
        self._free: asyncio.LifoQueue[Instance] | None = None

    def _queue(self) -> asyncio.LifoQueue[Instance]:
        if self._free is None:  # made on first use: it belongs to the serving event loop
            self._free = asyncio.LifoQueue()
            for instance in reversed(self.instances):  # (the first instance on top)
                self._free.put_nowait(instance)
        return self._free

    async def take(self) -> Instance:
        instance = await self._queue().get()
        instance.runs += 1
        return instance

    def give_back(self, instance: Instance) -> None:
        self._queue().put_nowait(instance)

    async def hold_all(self) -> list[Instance]:
        """Every instance, each as it comes free (not counted as runs); the model serves nothing until
        they are given back. One holder at a time (the caller's lock): two would deadlock."""
        queue = self._queue()
        return [await queue.get() for _ in self.instances]
