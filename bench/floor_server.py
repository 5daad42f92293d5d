"""The floor: the least a Python gRPC server can do per ModelInfer call (bench/dataplane.py compares with it).

    python bench/floor_server.py NAME=MODEL.onnx [NAME=MODEL.onnx ...] [--port 0] [--threads N]

A minimal ``grpc.aio`` KServe v2 server: one onnxruntime session per model, with graphgen-server's
session settings (``--threads``: the intra-op threads graphgen gives each instance), run inline on
the event loop; raw input bytes become a numpy view, the outputs go back as raw bytes. No checks,
no statistics beyond a request count (perf_analyzer reads it through ModelStatistics,
bench/dataplane.py divides CPU time by it), no thread hop, no admission, no shutdown gate. Below this, the cost is gRPC's and onnxruntime's, not the server's.
Prints ``grpc_port=P`` once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc
import numpy as np
import onnxruntime as ort

from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_protos import kserve_v2_pb2_grpc

DTYPES = {"tensor(float)": ("FP32", np.float32), "tensor(float16)": ("FP16", np.float16)}


class Model:
    def __init__(self, name: str, path: str, threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads  # (0: onnxruntime's default, a thread per core)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.name = name
        self.input = self.session.get_inputs()[0]
        self.dtype = DTYPES[self.input.type][1]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.count = 0


def _tensor(arg) -> pb.ModelMetadataResponse.TensorMetadata:
    shape = [d if isinstance(d, int) else -1 for d in arg.shape]
    return pb.ModelMetadataResponse.TensorMetadata(name=arg.name, datatype=DTYPES[arg.type][0], shape=shape)


class Floor(kserve_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, models: dict[str, Model]) -> None:
        self.models = models

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=request.name in self.models)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="floor", version="0", extensions=["statistics"])

    async def ModelMetadata(self, request, context):
        model = self.models[request.name]
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=["1"],
            platform="onnxruntime_onnx",
            inputs=[_tensor(model.input)],
            outputs=[_tensor(o) for o in model.session.get_outputs()],
        )

    async def ModelConfig(self, request, context):
        response = pb.ModelConfigResponse()  # what perf_analyzer reads: the batch limit
        response.config.name, response.config.platform, response.config.max_batch_size = (
            request.name,
            "onnxruntime_onnx",
            8,
        )
        return response

    async def ModelStatistics(self, request, context):
        response = pb.ModelStatisticsResponse()
        for model in self.models.values():
            stats = response.model_stats.add(name=model.name, version="1")
            stats.inference_count = stats.execution_count = stats.inference_stats.success.count = model.count
        return response

    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        model = self.models[request.model_name]
        array = np.frombuffer(request.raw_input_contents[0], model.dtype).reshape(request.inputs[0].shape)
        outputs = model.session.run(model.output_names, {model.input.name: array})
        response = pb.ModelInferResponse(model_name=model.name, model_version="1", id=request.id)
        for name, value in zip(model.output_names, outputs):
            response.outputs.add(name=name, datatype="FP32", shape=value.shape)
            response.raw_output_contents.append(value.tobytes())
        model.count += 1
        return response


async def serve(models: dict[str, Model], port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    kserve_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(models), server)
    chosen = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"grpc_port={chosen}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="NAME=MODEL.onnx")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads per session (0: a thread per core)")
    args = parser.parse_args()
    models = dict(entry.split("=", 1) for entry in args.models)
    asyncio.run(serve({name: Model(name, path, args.threads) for name, path in models.items()}, args.port))


if __name__ == "__main__":
    main()
