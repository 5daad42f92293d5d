"""``inference.GRPCInferenceService`` (KServe v2, as Triton serves it): protobuf ↔ numpy only.

Per-layer profile: request parameters ``profile`` (bool) and ``profile_runs`` (int, 0: the server's
default) ask for one; the response then carries parameter ``graphgen_profile``, a string holding
the ``graphgen.v1.Profile`` message (classifier.proto) as JSON — the same profile Classify returns.

ModelInfer takes each input as ``raw_input_contents`` (what tritonclient sends) or as typed
``contents`` (``fp32_contents``, ``int64_contents``...), and answers ``raw_output_contents``. The classification extension:
a requested output with parameter ``classification`` = N becomes a BYTES tensor [batch, N] of
``"<value>:<index>:<label>"``, best first, where value is the output's own value (a logit), as
Triton reports it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf import json_format

import graphgen
from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_protos import kserve_v2_pb2_grpc
from graphgen_server.control import ModelControl
from graphgen_server.errors import (
    CallGate,
    InvalidArgument,
    NotFound,
    Refused,
    Undecodable,
    abort_with_status,
    clamp,
    status_of,
)
from graphgen_server.profiling import profile_message
from graphgen_server.runtime import Profiling, RequestedOutput, Runtime
from graphgen_server.stats import Duration, ModelStats
from graphgen_server.tensors import InputTensor, TensorInfo, to_bytes

log = logging.getLogger("graphgen_server")

PLATFORM = "onnxruntime_onnx"
STREAM_IN_FLIGHT = 64  # requests of one ModelStreamInfer stream running at once
EXTENSIONS = ["classification", "statistics"]
CLASSIFICATION = "classification"
PROFILE, PROFILE_RUNS, PROFILE_RESPONSE = "profile", "profile_runs", "graphgen_profile"
# The typed ``contents`` field that carries each datatype (FP16 has none: raw bytes only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def serialize_bytes(elements: list[bytes]) -> bytes:
    """KServe's BYTES layout: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def input_tensors(request: pb.ModelInferRequest) -> list[InputTensor]:
    """The request's inputs, data from ``raw_input_contents`` (what tritonclient sends) or typed contents."""
    raw = request.raw_input_contents
    mismatch = None
    if raw and len(raw) != len(request.inputs):
        mismatch = InvalidArgument(
            "raw_input_contents", f"{len(raw)} entries for {len(request.inputs)} inputs (one per input when used)"
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        field = f"inputs[{index}]"
        data: bytes | Sequence[Any] | InvalidArgument
        if mismatch is not None:
            data, data_field = mismatch, "raw_input_contents"
        elif raw:
            data, data_field = raw[index], f"raw_input_contents[{index}]"
        elif tensor.datatype in CONTENTS_FIELD:
            contents = CONTENTS_FIELD[tensor.datatype]
            data, data_field = getattr(tensor.contents, contents), f"{field}.contents.{contents}"
        else:
            data_field = f"{field}.contents"
            data = InvalidArgument(
                data_field, f"{tensor.datatype} has no typed contents field: send its bytes in raw_input_contents"
            )
        tensors.append(InputTensor(tensor.name, tensor.datatype, tuple(tensor.shape), data, field, data_field))
    return tensors


def requested_outputs(request: pb.ModelInferRequest) -> list[RequestedOutput]:
    wanted = []
    for position, output in enumerate(request.outputs):
        k = None
        if CLASSIFICATION in output.parameters:
            parameter = output.parameters[CLASSIFICATION]
            kind = parameter.WhichOneof("parameter_choice")
            k = getattr(parameter, kind) if kind else "nothing"
        wanted.append(RequestedOutput(output.name, f"outputs[{position}]", k))
    return wanted


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

        def tensor(info: TensorInfo) -> pb.ModelMetadataResponse.TensorMetadata:
            return pb.ModelMetadataResponse.TensorMetadata(name=info.name, datatype=info.datatype, shape=info.dims)

        return pb.ModelMetadataResponse(
            name=model.name,
            versions=sorted(self.runtime.models[model.name], key=int),
            platform=PLATFORM,
            inputs=[tensor(i) for i in model.inputs],
            outputs=[tensor(o) for o in model.outputs],
        )

    @abort_with_status
    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        return await self._infer(request)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest | Undecodable], context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request of the stream answered in order; a failed one answers its error, and the stream goes on.

        Requests run concurrently (up to STREAM_IN_FLIGHT at a time), so one stream can keep
        the model as busy as as many unary calls.
        """
        pending: asyncio.Queue[asyncio.Task[pb.ModelStreamInferResponse] | None] = asyncio.Queue()
        room = asyncio.Semaphore(STREAM_IN_FLIGHT)

        async def read() -> None:
            try:
                async for request in requests:
                    await room.acquire()
                    pending.put_nowait(asyncio.ensure_future(self._stream_answer(request)))
            finally:
                pending.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await pending.get()) is not None:
                answer = await task
                room.release()
                yield answer
            await reader  # (a broken stream raises here)
        finally:
            reader.cancel()

    async def _stream_answer(self, request: pb.ModelInferRequest | Undecodable) -> pb.ModelStreamInferResponse:
        try:
            async with self.gate.call():
                if isinstance(request, Undecodable):
                    raise InvalidArgument("request", f"not a valid {request.message_type} message ({request.error})")
                return pb.ModelStreamInferResponse(infer_response=await self._infer(request))
        except Exception as error:
            code, message = status_of(error)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("ModelStreamInfer failed")
            answer = pb.ModelStreamInferResponse(error_message=clamp(f"{code.name}: {message}"))
            if not isinstance(request, Undecodable):
                answer.infer_response.id = request.id
                answer.infer_response.model_name = request.model_name
                answer.infer_response.model_version = request.model_version
            return answer

    @abort_with_status
    async def ModelConfig(self, request: pb.ModelConfigRequest, context) -> pb.ModelConfigResponse:
        """The configuration the server enforces: config.pbtxt as honoured, completed from the model."""
        model = self.runtime.ready(request.name, request.version)
        return pb.ModelConfigResponse(config=model.model_config)

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        inferred = await self.runtime.infer(
            request.model_name, request.model_version, inputs=input_tensors(request),
            outputs=requested_outputs(request), profile=profiling(request),
        )  # fmt: skip
        response = pb.ModelInferResponse(model_name=inferred.model, model_version=inferred.version, id=request.id)
        if inferred.profile is not None:
            response.parameters[PROFILE_RESPONSE].string_param = json_format.MessageToJson(
                profile_message(inferred.profile), indent=None
            )
        for output in inferred.outputs:
            response.outputs.add(name=output.name, datatype=output.datatype, shape=output.array.shape)
            if output.datatype == "BYTES":
                response.raw_output_contents.append(serialize_bytes(list(output.array.ravel())))
            else:
                response.raw_output_contents.append(to_bytes(output.array))
        return response

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


def profiling(request: pb.ModelInferRequest) -> Profiling:
    """The request's ``profile`` (bool) and ``profile_runs`` (int) parameters."""
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
    return Profiling(profile, runs, f"parameters.{PROFILE_RUNS}")


def _duration(duration: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=duration.count, ns=duration.ns)


def _statistics(name: str, version: str, stats: ModelStats) -> pb.ModelStatistics:
    stats = stats.snapshot()
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
