"""``graphgen.v1.Classifier``: protobuf in, numpy to the runtime, protobuf out — nothing else."""

from __future__ import annotations

import grpc

from graphgen.metadata import ARCHITECTURE
from graphgen_protos import classifier_pb2 as pb
from graphgen_protos import classifier_pb2_grpc
from graphgen_server.core.api import Runtime
from graphgen_server.core.model_version import ModelVersion
from graphgen_server.core.requests import Profiling
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.profiles import profile_message
from graphgen_server.frontends.status import abort_with_status
from graphgen_server.tensors import InputTensor

DEFAULT_TOP_K = 5


def input_tensor(tensor: pb.Tensor) -> InputTensor:
    """The request's preprocessed batch (float32, little-endian) for the model's only input."""
    return InputTensor(
        name=None,
        datatype="FP32",
        shape=tuple(tensor.shape),
        data=tensor.data,
        field="tensor",
        data_field="tensor.data",
        fit_field="tensor",
    )


def model_info(model: ModelVersion) -> pb.ModelInfo:
    info = pb.ModelInfo(name=model.name, version=model.version, ready=model.ready, reason=model.reason)
    loaded = model.loaded
    if loaded is not None:
        info.provider, info.provider_reason = loaded.provider, loaded.provider_reason
        info.architecture = loaded.metadata.get(ARCHITECTURE, "")
        info.input_shape.extend(d or -1 for d in loaded.input.shape)
        info.num_classes = loaded.num_classes
        info.dynamic_batching = model.batcher is not None
        info.input_name, info.output_name = loaded.input.name, loaded.outputs[0].name
    return info


class ClassifierServicer(classifier_pb2_grpc.ClassifierServicer):
    def __init__(self, runtime: Runtime, gate: CallGate) -> None:
        self.runtime = runtime
        self.gate = gate

    @abort_with_status
    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        classified = await self.runtime.classify(
            request.model,
            request.version,
            images=list(request.images),
            tensor=input_tensor(request.tensor) if request.HasField("tensor") else None,
            top_k=request.top_k or DEFAULT_TOP_K,
            profile=Profiling(request.profile, request.profile_runs),
        )
        response = pb.ClassifyResponse(
            model=classified.model,
            version=classified.version,
            provider=classified.provider,
            results=[
                pb.Classification(classes=[pb.ClassScore(index=c.index, label=c.label, score=c.score) for c in row])
                for row in classified.results
            ],
        )
        if classified.profile is not None:
            response.profile.CopyFrom(profile_message(classified.profile, timeline=request.profile_timeline))
        t = classified.timings
        timings = pb.Timings(
            queue_us=int(t.queue_s * 1e6),
            preprocess_us=int(t.input_s * 1e6),
            inference_us=int(t.infer_s * 1e6),
            postprocess_us=int(t.output_s * 1e6),
            total_us=int(t.total_s * 1e6),
            batch_size=t.batch_size,
            profile_setup_us=int(t.profile_setup_s * 1e6),
            profile_wait_us=int(t.profile_wait_s * 1e6),
        )
        response.timings.CopyFrom(timings)
        return response

    @abort_with_status
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[model_info(m) for m in self.runtime.all()])
