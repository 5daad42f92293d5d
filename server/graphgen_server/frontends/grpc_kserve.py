"""``inference.GRPCInferenceService`` (KServe v2, as Triton serves it): protobuf ↔ numpy only.

Per-layer profile: request parameters ``profile`` (bool) and ``profile_runs`` (int, 0: the server's
default) ask for one; the response then carries parameter ``graphgen_profile``, a string holding
the ``graphgen.v1.Profile`` message (classifier.proto) as JSON — the same profile Classify returns.

ModelInfer takes each input as ``raw_input_contents`` (what tritonclient sends), as typed
``contents`` (``fp32_contents``, ``int64_contents``...) or in a registered shared-memory region
(:mod:`graphgen_server.frontends.kserve_shm`), and answers ``raw_output_contents`` (empty for an
output written to shared memory, as Triton). The classification extension:
a requested output with parameter ``classification`` = N becomes a BYTES tensor [batch, N] of
``"<value>:<index>:<label>"``, best first, where value is the output's own value (a logit), as
Triton reports it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_protos import kserve_v2_pb2_grpc
from graphgen_server.core.api import Runtime
from graphgen_server.core.control import LocalControl
from graphgen_server.core.errors import InvalidArgument, ServingError, Unsupported
from graphgen_server.core.model_control import ModelControl
from graphgen_server.core.requests import RequestedOutput
from graphgen_server.core.shared_memory import SharedMemory
from graphgen_server.frontends import kserve_common, kserve_shm
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.grpc_wire import Undecodable
from graphgen_server.frontends.kserve_common import PROFILE_RESPONSE, serialize_bytes
from graphgen_server.frontends.raw_tensors import Serialized, WithRaw, nested, with_raw
from graphgen_server.frontends.status import abort_with_status, clamp, status_of
from graphgen_server.tensors import InputTensor, little_endian

log = logging.getLogger("graphgen_server")

STREAM_IN_FLIGHT = 64  # requests of one ModelStreamInfer stream running at once
RAW_INPUT_CONTENTS, RAW_OUTPUT_CONTENTS = 7, 6  # field numbers (ModelInferRequest, ModelInferResponse)
STREAM_INFER_RESPONSE = 2  # ModelStreamInferResponse.infer_response
# The typed ``contents`` field that carries each datatype (FP16 has none: raw bytes only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_values(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """An InferParameter map as Python values (None for a parameter holding none)."""
    values = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, kind) if kind else None
    return values


def input_tensors(
    request: pb.ModelInferRequest,
    shared_memory: SharedMemory | None = None,
    raw: Sequence[bytes | memoryview] | None = None,
) -> list[InputTensor]:
    """The request's inputs, data from ``raw_input_contents`` (what tritonclient sends), typed contents
    or shared memory (an input there takes no ``raw_input_contents`` entry, as in Triton).

    ``raw``: the raw contents where they were kept out of the parsed message (views of the bytes
    received: :mod:`graphgen_server.frontends.raw_tensors`).
    """
    regions = [
        kserve_shm.region_reference(parameter_values(tensor.parameters), f"inputs[{index}].parameters")
        for index, tensor in enumerate(request.inputs)
    ]
    raw = request.raw_input_contents if raw is None else raw
    takers = sum(region is None for region in regions)  # inputs whose bytes are in raw_input_contents
    mismatch = None
    if raw and len(raw) != takers:
        in_shm = " not in shared memory" if takers != len(regions) else ""
        mismatch = InvalidArgument(
            "raw_input_contents", f"{len(raw)} entries for {takers} inputs{in_shm} (one per input when used)"
        )
    tensors, next_raw = [], 0
    for index, (tensor, region) in enumerate(zip(request.inputs, regions)):
        field = f"inputs[{index}]"
        data: bytes | memoryview | Sequence[Any] | InvalidArgument
        if region is not None:
            if tensor.HasField("contents"):
                raise InvalidArgument(f"{field}.contents", f"given with '{kserve_shm.REGION}': send one")
            if shared_memory is None:
                raise Unsupported("no shared-memory regions in this server")
            data, data_field = kserve_shm.input_data(shared_memory, region), region.byte_size_field
        elif mismatch is not None:
            data, data_field = mismatch, "raw_input_contents"
        elif raw:
            data, data_field = raw[next_raw], f"raw_input_contents[{next_raw}]"
            next_raw += 1
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
    return [
        RequestedOutput(
            output.name, f"outputs[{position}]", kserve_common.classification(parameter_values(output.parameters))
        )
        for position, output in enumerate(request.outputs)
    ]


def output_regions(request: pb.ModelInferRequest) -> dict[str, kserve_shm.RegionReference]:
    """The requested outputs to be written to shared memory, by name."""
    regions = {}
    for position, output in enumerate(request.outputs):
        values, field = parameter_values(output.parameters), f"outputs[{position}].parameters"
        region = kserve_shm.region_reference(values, field)
        kserve_shm.check_output(region, kserve_common.classification(values), field)
        if region is not None:
            regions[output.name] = region
    return regions


class KServeServicer(kserve_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        runtime: Runtime,
        gate: CallGate,
        control: ModelControl | None = None,
        shared_memory: SharedMemory | None = None,
    ) -> None:
        self.runtime = runtime
        self.gate = gate
        self.control = control  # None: RepositoryModelLoad/Unload are refused
        # None: no region can be registered (status lists none).
        self.shared_memory = shared_memory or SharedMemory(LocalControl())

    @abort_with_status
    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @abort_with_status
    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=kserve_common.server_ready(self.runtime, self.gate))

    @abort_with_status
    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=kserve_common.model_ready(self.runtime, request.name, request.version))

    @abort_with_status
    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**kserve_common.server_metadata(self.control))

    @abort_with_status
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:
        metadata = kserve_common.model_metadata(self.runtime, request.name, request.version)
        return json_format.ParseDict(metadata, pb.ModelMetadataResponse())

    @abort_with_status
    async def ModelInfer(self, request: pb.ModelInferRequest | WithRaw, context) -> Serialized:
        return await self._infer(request)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest | WithRaw | Undecodable], context
    ) -> AsyncIterator[pb.ModelStreamInferResponse | Serialized]:
        """Each request of the stream answered in order; a failed one answers its error, and the stream goes on.

        Requests run concurrently (up to STREAM_IN_FLIGHT at a time), so one stream can keep
        the model as busy as as many unary calls.
        """
        pending: asyncio.Queue[asyncio.Task[pb.ModelStreamInferResponse | Serialized] | None] = asyncio.Queue()
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

    async def _stream_answer(
        self, request: pb.ModelInferRequest | WithRaw | Undecodable
    ) -> pb.ModelStreamInferResponse | Serialized:
        try:
            async with self.gate.call():
                if isinstance(request, Undecodable):
                    raise InvalidArgument("request", f"not a valid {request.message_type} message ({request.error})")
                return nested(STREAM_INFER_RESPONSE, await self._infer(request))
        except Exception as error:
            code, message = status_of(error)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("ModelStreamInfer failed")
            answer = pb.ModelStreamInferResponse(error_message=clamp(f"{code.name}: {message}"))
            if not isinstance(request, Undecodable):
                asked = request.message if isinstance(request, WithRaw) else request
                answer.infer_response.id = asked.id
                answer.infer_response.model_name = asked.model_name
                answer.infer_response.model_version = asked.model_version
            return answer

    @abort_with_status
    async def ModelConfig(self, request: pb.ModelConfigRequest, context) -> pb.ModelConfigResponse:
        """The configuration the server enforces: config.pbtxt as honoured, completed from the model."""
        loaded = self.runtime.ready(request.name, request.version).served()
        return pb.ModelConfigResponse(config=loaded.config)

    async def _infer(self, request: pb.ModelInferRequest | WithRaw) -> Serialized:
        message, raw = (request.message, request.raw) if isinstance(request, WithRaw) else (request, None)
        try:
            in_shared_memory = kserve_shm.output_views(self.shared_memory, output_regions(message))
            inputs, outputs = input_tensors(message, self.shared_memory, raw), requested_outputs(message)
            profile = kserve_common.profiling(parameter_values(message.parameters))
        except ServingError as error:  # counted as the core counts the requests it refuses
            self.runtime.refused(message.model_name, message.model_version, error)
            raise
        inferred = await self.runtime.infer(
            message.model_name, message.model_version, inputs=inputs, outputs=outputs, profile=profile
        )
        written = kserve_shm.write_outputs(inferred.outputs, in_shared_memory)
        # The response without its tensors, then each tensor's bytes written once after it.
        head = pb.ModelInferResponse(model_name=inferred.model, model_version=inferred.version, id=message.id)
        if inferred.profile is not None:
            head.parameters[PROFILE_RESPONSE].string_param = kserve_common.profile_json(inferred.profile)
        contents: list[bytes | np.ndarray] = []
        for output in inferred.outputs:
            head.outputs.add(name=output.name, datatype=output.datatype, shape=output.array.shape)
            if output.name in written:
                contents.append(b"")  # (one entry per output, as Triton)
            elif output.datatype == "BYTES":
                contents.append(serialize_bytes(list(output.array.ravel())))
            else:
                contents.append(little_endian(output.array))
        return with_raw(head, RAW_OUTPUT_CONTENTS, contents)

    @abort_with_status
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context) -> pb.ModelStatisticsResponse:
        model_stats = await kserve_common.ready_statistics(self.runtime, request.name, request.version)
        return json_format.ParseDict({"model_stats": model_stats}, pb.ModelStatisticsResponse())

    @abort_with_status
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context) -> pb.RepositoryIndexResponse:
        models = kserve_common.repository_index(self.runtime, request.ready)
        return json_format.ParseDict({"models": models}, pb.RepositoryIndexResponse())

    @abort_with_status
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context
    ) -> pb.RepositoryModelLoadResponse:
        control = self._model_control(request, allowed={kserve_common.CONFIG_PARAMETER})
        await control.load(request.model_name, kserve_common.config_override(parameter_values(request.parameters)))
        return pb.RepositoryModelLoadResponse()

    @abort_with_status
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context
    ) -> pb.RepositoryModelUnloadResponse:
        # tritonclient always sends unload_dependents: there are no ensembles here, so no dependents.
        await self._model_control(request, allowed={"unload_dependents"}).unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _model_control(self, request, allowed: frozenset[str] | set[str] = frozenset()) -> ModelControl:
        return kserve_common.model_control(self.control, request.repository_name, request.parameters, allowed)

    # -- shared memory, tracing, logging: Triton's other RPCs ------------------------------
    @abort_with_status
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context
    ) -> pb.SystemSharedMemoryStatusResponse:
        regions = kserve_shm.system_status(self.shared_memory, request.name)
        return json_format.ParseDict(
            {"regions": {r["name"]: r for r in regions}}, pb.SystemSharedMemoryStatusResponse()
        )

    @abort_with_status
    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context
    ) -> pb.SystemSharedMemoryRegisterResponse:
        await self.shared_memory.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @abort_with_status
    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        await self.shared_memory.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    @abort_with_status
    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context
    ) -> pb.CudaSharedMemoryStatusResponse:
        kserve_shm.cuda_status(self.shared_memory, request.name)
        return pb.CudaSharedMemoryStatusResponse()

    @abort_with_status
    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context
    ) -> pb.CudaSharedMemoryRegisterResponse:
        raise Unsupported(kserve_shm.cuda_refused(request.name))

    @abort_with_status
    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        kserve_shm.cuda_unregister(self.shared_memory)
        return pb.CudaSharedMemoryUnregisterResponse()

    @abort_with_status
    async def TraceSetting(self, request: pb.TraceSettingRequest, context) -> pb.TraceSettingResponse:
        raise Unsupported(kserve_common.TRACE_REFUSED)

    @abort_with_status
    async def LogSettings(self, request: pb.LogSettingsRequest, context) -> pb.LogSettingsResponse:
        raise Unsupported(kserve_common.LOGGING_REFUSED)
