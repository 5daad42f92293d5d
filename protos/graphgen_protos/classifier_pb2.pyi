from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("shape", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("model", "version", "images", "tensor", "top_k", "profile", "profile_runs", "profile_timeline")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_RUNS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_TIMELINE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    images: _containers.RepeatedScalarFieldContainer[bytes]
    tensor: Tensor
    top_k: int
    profile: bool
    profile_runs: int
    profile_timeline: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., images: _Optional[_Iterable[bytes]] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., top_k: _Optional[int] = ..., profile: _Optional[bool] = ..., profile_runs: _Optional[int] = ..., profile_timeline: _Optional[bool] = ...) -> None: ...

class ClassScore(_message.Message):
    __slots__ = ("index", "label", "score")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    index: int
    label: str
    score: float
    def __init__(self, index: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("classes",)
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedCompositeFieldContainer[ClassScore]
    def __init__(self, classes: _Optional[_Iterable[_Union[ClassScore, _Mapping]]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_us", "preprocess_us", "inference_us", "postprocess_us", "total_us", "batch_size", "profile_setup_us", "profile_wait_us")
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_US_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_US_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_US_FIELD_NUMBER: _ClassVar[int]
    TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_SETUP_US_FIELD_NUMBER: _ClassVar[int]
    PROFILE_WAIT_US_FIELD_NUMBER: _ClassVar[int]
    queue_us: int
    preprocess_us: int
    inference_us: int
    postprocess_us: int
    total_us: int
    batch_size: int
    profile_setup_us: int
    profile_wait_us: int
    def __init__(self, queue_us: _Optional[int] = ..., preprocess_us: _Optional[int] = ..., inference_us: _Optional[int] = ..., postprocess_us: _Optional[int] = ..., total_us: _Optional[int] = ..., batch_size: _Optional[int] = ..., profile_setup_us: _Optional[int] = ..., profile_wait_us: _Optional[int] = ...) -> None: ...

class LayerTime(_message.Message):
    __slots__ = ("layer", "nodes", "op_types", "kernel", "kernel_op", "provider", "time_us", "share", "mapped", "median_us", "p10_us", "p90_us", "min_us", "max_us", "device_us", "device_p10_us", "device_p90_us", "bytes", "params", "macs", "activation_bytes", "kind")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    OP_TYPES_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    KERNEL_OP_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    TIME_US_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    MAPPED_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_US_FIELD_NUMBER: _ClassVar[int]
    P10_US_FIELD_NUMBER: _ClassVar[int]
    P90_US_FIELD_NUMBER: _ClassVar[int]
    MIN_US_FIELD_NUMBER: _ClassVar[int]
    MAX_US_FIELD_NUMBER: _ClassVar[int]
    DEVICE_US_FIELD_NUMBER: _ClassVar[int]
    DEVICE_P10_US_FIELD_NUMBER: _ClassVar[int]
    DEVICE_P90_US_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MACS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BYTES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    layer: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    op_types: _containers.RepeatedScalarFieldContainer[str]
    kernel: str
    kernel_op: str
    provider: str
    time_us: int
    share: float
    mapped: bool
    median_us: float
    p10_us: float
    p90_us: float
    min_us: float
    max_us: float
    device_us: float
    device_p10_us: float
    device_p90_us: float
    bytes: int
    params: int
    macs: int
    activation_bytes: int
    kind: str
    def __init__(self, layer: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ..., op_types: _Optional[_Iterable[str]] = ..., kernel: _Optional[str] = ..., kernel_op: _Optional[str] = ..., provider: _Optional[str] = ..., time_us: _Optional[int] = ..., share: _Optional[float] = ..., mapped: _Optional[bool] = ..., median_us: _Optional[float] = ..., p10_us: _Optional[float] = ..., p90_us: _Optional[float] = ..., min_us: _Optional[float] = ..., max_us: _Optional[float] = ..., device_us: _Optional[float] = ..., device_p10_us: _Optional[float] = ..., device_p90_us: _Optional[float] = ..., bytes: _Optional[int] = ..., params: _Optional[int] = ..., macs: _Optional[int] = ..., activation_bytes: _Optional[int] = ..., kind: _Optional[str] = ...) -> None: ...

class KernelSpan(_message.Message):
    __slots__ = ("layer", "start_us", "dur_us", "thread")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    START_US_FIELD_NUMBER: _ClassVar[int]
    DUR_US_FIELD_NUMBER: _ClassVar[int]
    THREAD_FIELD_NUMBER: _ClassVar[int]
    layer: int
    start_us: float
    dur_us: float
    thread: int
    def __init__(self, layer: _Optional[int] = ..., start_us: _Optional[float] = ..., dur_us: _Optional[float] = ..., thread: _Optional[int] = ...) -> None: ...

class ProfileRun(_message.Message):
    __slots__ = ("start_us", "dur_us", "kernels")
    START_US_FIELD_NUMBER: _ClassVar[int]
    DUR_US_FIELD_NUMBER: _ClassVar[int]
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    start_us: float
    dur_us: float
    kernels: _containers.RepeatedCompositeFieldContainer[KernelSpan]
    def __init__(self, start_us: _Optional[float] = ..., dur_us: _Optional[float] = ..., kernels: _Optional[_Iterable[_Union[KernelSpan, _Mapping]]] = ...) -> None: ...

class Profile(_message.Message):
    __slots__ = ("layers", "layers_us", "inference_us", "overhead_us", "unprofiled_nodes", "provider", "runs", "warmup_runs", "batch_size", "spread", "inference_p10_us", "inference_p90_us", "timing", "timing_text", "device_run_us", "setup_us", "build_us", "notes", "between_kernels_us", "timeline", "runtime", "run_cpu_waits", "headline")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_US_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_US_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_US_FIELD_NUMBER: _ClassVar[int]
    UNPROFILED_NODES_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RUNS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_P10_US_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_P90_US_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    TIMING_TEXT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_RUN_US_FIELD_NUMBER: _ClassVar[int]
    SETUP_US_FIELD_NUMBER: _ClassVar[int]
    BUILD_US_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    BETWEEN_KERNELS_US_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    RUN_CPU_WAITS_FIELD_NUMBER: _ClassVar[int]
    HEADLINE_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerTime]
    layers_us: int
    inference_us: int
    overhead_us: int
    unprofiled_nodes: _containers.RepeatedScalarFieldContainer[str]
    provider: str
    runs: int
    warmup_runs: int
    batch_size: int
    spread: str
    inference_p10_us: float
    inference_p90_us: float
    timing: str
    timing_text: str
    device_run_us: float
    setup_us: int
    build_us: int
    notes: _containers.RepeatedScalarFieldContainer[str]
    between_kernels_us: float
    timeline: _containers.RepeatedCompositeFieldContainer[ProfileRun]
    runtime: str
    run_cpu_waits: _containers.RepeatedScalarFieldContainer[float]
    headline: str
    def __init__(self, layers: _Optional[_Iterable[_Union[LayerTime, _Mapping]]] = ..., layers_us: _Optional[int] = ..., inference_us: _Optional[int] = ..., overhead_us: _Optional[int] = ..., unprofiled_nodes: _Optional[_Iterable[str]] = ..., provider: _Optional[str] = ..., runs: _Optional[int] = ..., warmup_runs: _Optional[int] = ..., batch_size: _Optional[int] = ..., spread: _Optional[str] = ..., inference_p10_us: _Optional[float] = ..., inference_p90_us: _Optional[float] = ..., timing: _Optional[str] = ..., timing_text: _Optional[str] = ..., device_run_us: _Optional[float] = ..., setup_us: _Optional[int] = ..., build_us: _Optional[int] = ..., notes: _Optional[_Iterable[str]] = ..., between_kernels_us: _Optional[float] = ..., timeline: _Optional[_Iterable[_Union[ProfileRun, _Mapping]]] = ..., runtime: _Optional[str] = ..., run_cpu_waits: _Optional[_Iterable[float]] = ..., headline: _Optional[str] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("model", "version", "provider", "results", "timings", "profile")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    provider: str
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    timings: Timings
    profile: Profile
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., provider: _Optional[str] = ..., results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., profile: _Optional[_Union[Profile, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "ready", "reason", "provider", "architecture", "input_shape", "num_classes", "dynamic_batching", "input_name", "output_name", "provider_reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_BATCHING_FIELD_NUMBER: _ClassVar[int]
    INPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    ready: bool
    reason: str
    provider: str
    architecture: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    num_classes: int
    dynamic_batching: bool
    input_name: str
    output_name: str
    provider_reason: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., ready: _Optional[bool] = ..., reason: _Optional[str] = ..., provider: _Optional[str] = ..., architecture: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., num_classes: _Optional[int] = ..., dynamic_batching: _Optional[bool] = ..., input_name: _Optional[str] = ..., output_name: _Optional[str] = ..., provider_reason: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...
