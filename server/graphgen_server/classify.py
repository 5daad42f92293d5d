"""``graphgen.v1.Classifier``: protobuf in, numpy to the runtime, protobuf out — nothing else."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np

from graphgen.metadata import ARCHITECTURE
from graphgen_protos import classifier_pb2 as pb
from graphgen_protos import classifier_pb2_grpc
from graphgen_server.errors import CallGate, InvalidArgument, abort_with_status
from graphgen_server.profiling import profile_message
from graphgen_server.runtime import ModelVersion, Runtime, declared_shape, top_classes

DEFAULT_TOP_K = 5


def tensor_to_array(tensor: pb.Tensor, field: str) -> np.ndarray:
    """A float32 array over the message's bytes (no copy), after checking they fit the shape."""
    shape, count = declared_shape(tensor.shape, field)
    expected = count * 4
    if len(tensor.data) != expected:
        raise InvalidArgument(
            f"{field}.data", f"{len(tensor.data)} bytes, but float32 of shape {shape} needs {expected}"
        )
    return np.frombuffer(tensor.data, dtype="<f4").reshape(shape)


def model_info(model: ModelVersion) -> pb.ModelInfo:
    info = pb.ModelInfo(name=model.name, version=model.version, ready=model.ready, reason=model.reason)
    if model.ready:
        info.provider, info.provider_reason = model.provider, model.provider_reason
        info.architecture = model.metadata.get(ARCHITECTURE, "")
        info.input_shape.extend(d or -1 for d in model.input.shape)
        info.num_classes = model.num_classes
        info.dynamic_batching = model.batcher is not None
        info.input_name, info.output_name = model.input.name, model.outputs[0].name
    return info


class ClassifierServicer(classifier_pb2_grpc.ClassifierServicer):
    def __init__(self, runtime: Runtime, gate: CallGate) -> None:
        self.runtime = runtime
        self.gate = gate

    @abort_with_status
    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        arrived = time.perf_counter()
        async with self.runtime.use(request.model, request.version) as model:
            try:
                return await self._classify(model, request, arrived)
            except Exception:
                model.stats.record_request(ok=False, total_s=time.perf_counter() - arrived)
                raise

    async def _classify(self, model: ModelVersion, request: pb.ClassifyRequest, arrived: float) -> pb.ClassifyResponse:
        top_k = request.top_k or DEFAULT_TOP_K
        if top_k > model.num_classes:
            raise InvalidArgument("top_k", f"{top_k} is more than the model's {model.num_classes} classes")
        if request.profile_runs and not request.profile:
            raise InvalidArgument("profile_runs", "asks how many runs to profile: set profile too")
        model.check_profile_runs(request.profile_runs, "profile_runs")
        if request.images and request.HasField("tensor"):
            raise InvalidArgument("images", "send images or a tensor, not both")
        if request.HasField("tensor"):
            array = tensor_to_array(request.tensor, "tensor")
            model.check_batch(array, "tensor")
            preprocessed = time.perf_counter()
            outcome = await model.infer(array, profile=request.profile, profile_runs=request.profile_runs)
        else:
            images = list(request.images)
            model.check_images(images)
            # Admitted before decoding: requests beyond the queue bound are refused at once instead
            # of waiting, encoded images in memory, for a decoding thread.
            with model.admit(len(images)):
                loop = asyncio.get_running_loop()
                array = await loop.run_in_executor(self.runtime.executor, model.preprocess, images)
                preprocessed = time.perf_counter()
                outcome = await model.infer(
                    array, profile=request.profile, profile_runs=request.profile_runs, admitted=True
                )
        inferred = time.perf_counter()
        classes = top_classes(outcome.outputs[0], top_k, model.labels)
        response = pb.ClassifyResponse(
            model=model.name,
            version=model.version,
            provider=model.provider,
            results=[
                pb.Classification(classes=[pb.ClassScore(index=i, label=label, score=s) for i, label, s in row])
                for row in classes
            ],
        )
        if outcome.profile is not None:
            response.profile.CopyFrom(profile_message(outcome.profile))
        done = time.perf_counter()
        response.timings.CopyFrom(
            pb.Timings(
                queue_us=int(outcome.queue_s * 1e6),
                preprocess_us=int((preprocessed - arrived) * 1e6),
                inference_us=int(outcome.infer_s * 1e6),
                postprocess_us=int((done - inferred) * 1e6),
                total_us=int((done - arrived) * 1e6),
                batch_size=outcome.batch_size,
                profile_setup_us=int(outcome.profile_setup_s * 1e6),
            )
        )
        model.stats.record_request(
            ok=True, total_s=done - arrived, queue_s=outcome.queue_s, input_s=preprocessed - arrived,
            infer_s=outcome.infer_s, output_s=done - inferred, rows=int(array.shape[0]),
        )  # fmt: skip
        return response

    @abort_with_status
    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[model_info(m) for m in self.runtime.all()])
