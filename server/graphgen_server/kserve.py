"""``inference.GRPCInferenceService`` (KServe v2, as Triton serves it): protobuf ↔ numpy only.

Per-layer profile: request parameters ``profile`` (bool) and ``profile_runs`` (int, 0: the server's
default) ask for one; the response then carries parameter ``graphgen_profile``, a string holding
the ``graphgen.v1.Profile`` message (classifier.proto) as JSON — the same profile Classify returns.

ModelInfer takes the input as ``raw_input_contents`` (what tritonclient sends) or as typed
``contents.fp32_contents``, and answers ``raw_output_contents``. The classification extension:
a requested output with parameter ``classification`` = N becomes a BYTES tensor [batch, N] of
``"<value>:<index>:<label>"``, best first, where value is the output's own value (a logit), as
Triton reports it.
"""

from __future__ import annotations

import struct
import time

import numpy as np
from google.protobuf import json_format

import graphgen
from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_protos import kserve_v2_pb2_grpc
from graphgen_server.control import ModelControl
from graphgen_server.errors import CallGate, InvalidArgument, NotFound, Refused, abort_with_status
from graphgen_server.profiling import profile_message
from graphgen_server.runtime import ModelVersion, Runtime, declared_shape
from graphgen_server.stats import Duration, ModelStats

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["classification", "statistics"]
CLASSIFICATION = "classification"
PROFILE, PROFILE_RUNS, PROFILE_RESPONSE = "profile", "profile_runs", "graphgen_profile"
_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


def serialize_bytes(elements: list[bytes]) -> bytes:
    """KServe's BYTES layout: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def classification(values: np.ndarray, k: int, labels: list[str]) -> np.ndarray:
    """Per row, the k largest values as b"value:index:label" (Triton's format, best first)."""
    rows = values.reshape(values.shape[0], -1)
    best = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    return np.array(
        [
            [f"{row[i]:f}:{i}{':' + labels[i] if i < len(labels) else ''}".encode() for i in indices]
            for row, indices in zip(rows, best)
        ],
        dtype=object,
    )


class KServeServicer(kserve_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, runtime: Runtime, gate: CallGate, control: ModelControl | None = None) -> None:
        self.runtime = runtime
        self.gate = gate
        self.control = control  # None: RepositoryModelLoad/Unload are refused

    @abort_with_status
    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @abort_with_status
    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        # Ready while serving and at least one model is: a broken model is reported per model.
        ready = not self.gate.closed and any(m.ready for m in self.runtime.all())
        return pb.ServerReadyResponse(ready=ready)

    @abort_with_status
    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.runtime.find(request.name, request.version).ready)

    @abort_with_status
    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        extensions = [*EXTENSIONS, *(["model_repository"] if self.control else [])]
        return pb.ServerMetadataResponse(name="graphgen", version=graphgen.__version__, extensions=extensions)

    @abort_with_status
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:
        model = self.runtime.ready(request.name, request.version)

        def tensor(info) -> pb.ModelMetadataResponse.TensorMetadata:
            shape = [d or -1 for d in info.shape]
            return pb.ModelMetadataResponse.TensorMetadata(name=info.name, datatype="FP32", shape=shape)

        return pb.ModelMetadataResponse(
            name=model.name,
            versions=sorted(self.runtime.models[model.name], key=int),
            platform=PLATFORM,
            inputs=[tensor(model.input)],
            outputs=[tensor(o) for o in model.outputs],
        )

    @abort_with_status
    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        arrived = time.perf_counter()
        async with self.runtime.use(request.model_name, request.model_version) as model:
            return await self._infer(model, request, arrived)

    async def _infer(self, model: ModelVersion, request: pb.ModelInferRequest, arrived: float) -> pb.ModelInferResponse:
        try:
            array = self._input(model, request)
            wanted = self._requested_outputs(model, request)
            profile, runs = _profile_parameters(model, request)
            parsed = time.perf_counter()
            outcome = await model.infer(array, profile=profile, profile_runs=runs)
            inferred = time.perf_counter()
            response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
            if outcome.profile is not None:
                response.parameters[PROFILE_RESPONSE].string_param = json_format.MessageToJson(
                    profile_message(outcome.profile), indent=None
                )
            for index, k in wanted:
                info, values = model.outputs[index], outcome.outputs[index]
                if k:
                    values = classification(values, k, model.labels)
                    datatype, raw = "BYTES", serialize_bytes(list(values.ravel()))
                else:
                    datatype, raw = _DATATYPES.get(values.dtype, "FP32"), np.ascontiguousarray(values).tobytes()
                response.outputs.add(name=info.name, datatype=datatype, shape=values.shape)
                response.raw_output_contents.append(raw)
        except Exception:
            model.stats.record_request(ok=False, total_s=time.perf_counter() - arrived)
            raise
        done = time.perf_counter()
        model.stats.record_request(
            ok=True, total_s=done - arrived, queue_s=outcome.queue_s, input_s=parsed - arrived,
            infer_s=outcome.infer_s, output_s=done - inferred, rows=int(array.shape[0]),
        )  # fmt: skip
        return response

    def _input(self, model: ModelVersion, request: pb.ModelInferRequest) -> np.ndarray:
        if len(request.inputs) != 1:
            raise InvalidArgument(
                "inputs", f"model {model.name} takes 1 input ({model.input.name}), got {len(request.inputs)}"
            )
        tensor = request.inputs[0]
        if tensor.name != model.input.name:
            raise InvalidArgument(
                "inputs[0].name", f"model {model.name} has input {model.input.name!r}, not {tensor.name!r}"
            )
        if tensor.datatype != "FP32":
            raise InvalidArgument("inputs[0].datatype", f"must be FP32, got {tensor.datatype!r}")
        shape, count = declared_shape(tensor.shape, "inputs[0]")
        if request.raw_input_contents:
            if len(request.raw_input_contents) != len(request.inputs):
                raise InvalidArgument(
                    "raw_input_contents", f"{len(request.raw_input_contents)} entries for {len(request.inputs)} input"
                )
            raw = request.raw_input_contents[0]
            if len(raw) != count * 4:
                raise InvalidArgument(
                    "raw_input_contents[0]", f"{len(raw)} bytes, but FP32 of shape {shape} needs {count * 4}"
                )
            array = np.frombuffer(raw, dtype="<f4").reshape(shape)
        else:
            values = tensor.contents.fp32_contents
            if len(values) != count:
                raise InvalidArgument(
                    "inputs[0].contents.fp32_contents", f"{len(values)} values, but shape {shape} needs {count}"
                )
            array = np.asarray(values, dtype=np.float32).reshape(shape)
        model.check_batch(array, "inputs[0].shape")
        return array

    def _requested_outputs(self, model: ModelVersion, request: pb.ModelInferRequest) -> list[tuple[int, int]]:
        """(output index, classification count or 0) per requested output; all outputs if none named."""
        if not request.outputs:
            return [(i, 0) for i in range(len(model.outputs))]
        names = [o.name for o in model.outputs]
        wanted = []
        for position, output in enumerate(request.outputs):
            field = f"outputs[{position}]"
            if output.name not in names:
                raise InvalidArgument(
                    f"{field}.name", f"model {model.name} has no output {output.name!r} (outputs: {names})"
                )
            k = 0
            if CLASSIFICATION in output.parameters:
                parameter = output.parameters[CLASSIFICATION]
                kind = parameter.WhichOneof("parameter_choice")
                k = parameter.int64_param if kind == "int64_param" else 0
                if not 1 <= k <= model.num_classes:
                    got = repr(getattr(parameter, kind)) if kind else "nothing"
                    raise InvalidArgument(
                        f"{field}.parameters.classification",
                        f"must be an integer from 1 to {model.num_classes}, got {got}",
                    )
            wanted.append((names.index(output.name), k))
        return wanted

    @abort_with_status
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context) -> pb.ModelStatisticsResponse:
        if request.name:
            models = (
                [self.runtime.find(request.name, request.version)]
                if request.version
                else [m for m in self.runtime.all() if m.name == request.name]
            )
            if not models:
                self.runtime.find(request.name)  # raises NotFound
        else:
            models = self.runtime.all()
        return pb.ModelStatisticsResponse(model_stats=[_statistics(m.name, m.version, m.stats) for m in models])

    @abort_with_status
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context) -> pb.RepositoryIndexResponse:
        index = pb.RepositoryIndexResponse()
        for model in self.runtime.all():
            if request.ready and not model.ready:
                continue
            state = "READY" if model.ready else "UNAVAILABLE"
            index.models.add(name=model.name, version=model.version, state=state, reason=model.reason)
        return index

    @abort_with_status
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context
    ) -> pb.RepositoryModelLoadResponse:
        await self._model_control(request).load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @abort_with_status
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context
    ) -> pb.RepositoryModelUnloadResponse:
        # tritonclient always sends unload_dependents: there are no ensembles here, so no dependents.
        await self._model_control(request, allowed={"unload_dependents"}).unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _model_control(self, request, allowed: frozenset[str] | set[str] = frozenset()) -> ModelControl:
        if self.control is None:
            raise Refused("model control is off: start graphgen-server with --model-control to load and unload models")
        if request.repository_name:
            raise NotFound(f"repository {request.repository_name!r}: this server has one (leave repository_name empty)")
        refused = sorted(set(request.parameters) - allowed)
        if refused:
            raise InvalidArgument(
                "parameters", f"{refused} not supported (model files and settings come from the repository only)"
            )
        return self.control


def _profile_parameters(model: ModelVersion, request: pb.ModelInferRequest) -> tuple[bool, int]:
    """The request's ``profile`` (bool) and ``profile_runs`` (int) parameters, checked."""
    profile, runs = False, 0
    if PROFILE in request.parameters:
        parameter = request.parameters[PROFILE]
        if parameter.WhichOneof("parameter_choice") != "bool_param":
            raise InvalidArgument(f"parameters.{PROFILE}", "must be a bool")
        profile = parameter.bool_param
    if PROFILE_RUNS in request.parameters:
        parameter = request.parameters[PROFILE_RUNS]
        kind = parameter.WhichOneof("parameter_choice")
        if kind not in ("int64_param", "uint64_param"):
            raise InvalidArgument(f"parameters.{PROFILE_RUNS}", "must be an integer")
        runs = getattr(parameter, kind)
        if runs and not profile:
            raise InvalidArgument(f"parameters.{PROFILE_RUNS}", "asks how many runs to profile: set profile too")
        model.check_profile_runs(runs, f"parameters.{PROFILE_RUNS}")
    return profile, runs


def _duration(duration: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=duration.count, ns=duration.ns)


def _statistics(name: str, version: str, stats: ModelStats) -> pb.ModelStatistics:
    with stats.lock:
        return pb.ModelStatistics(
            name=name,
            version=version,
            last_inference=stats.last_inference_ms,
            inference_count=stats.inference_count,
            execution_count=stats.execution_count,
            inference_stats=pb.InferStatistics(
                success=_duration(stats.success),
                fail=_duration(stats.fail),
                queue=_duration(stats.queue),
                compute_input=_duration(stats.compute_input),
                compute_infer=_duration(stats.compute_infer),
                compute_output=_duration(stats.compute_output),
            ),
            batch_stats=[
                pb.InferBatchStatistics(batch_size=size, compute_infer=_duration(d.compute_infer))
                for size, d in sorted(stats.batches.items())
            ],
        )
