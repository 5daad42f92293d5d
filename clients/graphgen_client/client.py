"""``Client(address).classify(paths_or_bytes, model=..., top_k=5, profile=True)``; ``infer`` (KServe v2).

Beyond this machine: ``Client(address, tls_ca="ca.pem", token="...")`` (TLS, and the server's
bearer token); ``tls_cert`` / ``tls_key`` add a client certificate for mutual TLS.
Replicas: ``address`` may list several servers or be a DNS name resolving to several; calls go
round robin to those whose health says SERVING, and UNAVAILABLE calls are retried
(:mod:`graphgen_client.balancing`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from graphgen_client.balancing import (
    RetryPolicy,
    call_with_retries,
    channel_options,
    channel_target,
    with_default_port,
)
from graphgen_protos import classifier_pb2 as pb
from graphgen_protos import classifier_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:8001"
MAX_MESSAGE_BYTES = 64 << 20

ImageSource = str | Path | bytes
PemSource = str | Path | bytes
TOKEN_VARIABLE = "GRAPHGEN_TOKEN"
# KServe v2 datatypes of the tensors graphgen's models take and give.
DATATYPES = {
    "FP32": np.float32,
    "FP16": np.float16,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


class ClientError(Exception):
    """The server answered with an error status (``code`` is the grpc.StatusCode)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


def _read(image: ImageSource) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _pem(source: PemSource | None) -> bytes | None:
    return None if source is None else _read(source)


def _decode(tensor, raw: bytes) -> np.ndarray:
    """One ModelInferResponse output tensor as an array."""
    if tensor.datatype not in DATATYPES:
        raise ClientError(grpc.StatusCode.UNIMPLEMENTED, f"output {tensor.name!r}: datatype {tensor.datatype} not read")
    return np.frombuffer(raw, np.dtype(DATATYPES[tensor.datatype]).newbyteorder("<")).reshape(tensor.shape)


class Client:
    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float = 60.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        tls: bool = False,
        tls_ca: PemSource | None = None,
        tls_cert: PemSource | None = None,
        tls_key: PemSource | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``address``: ``host[:port]`` (one server; port 8001 unless given), or a replica set: ``ip:port,ip:port,...`` or
        ``dns:///name:port`` (round robin over those whose health says SERVING). ``timeout``: seconds per call, retries included.
        ``tls`` (implied by any tls_* argument): TLS, trusting ``tls_ca`` (default: the system's CAs);
        ``tls_server_name``: the name the server's certificate must carry, where it differs from the
        address dialled (a health check on 127.0.0.1). ``token``: sent as ``authorization: Bearer
        <token>`` on every call. ``retry``: how UNAVAILABLE idempotent calls are retried."""
        address = with_default_port(address)  # a bare host: graphgen-server's port, not gRPC's 443
        self.address, self.timeout = address, timeout
        self.retry = retry or RetryPolicy()
        self.retried = 0  # calls sent again after UNAVAILABLE, over this client's life
        target = channel_target(address)
        options = [
            *channel_options(address),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        if tls or tls_ca is not None or tls_cert is not None or tls_server_name:
            credentials = grpc.ssl_channel_credentials(_pem(tls_ca), _pem(tls_key), _pem(tls_cert))
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._metadata = [("authorization", f"Bearer {token}")] if token else None
        self._classifier = classifier_pb2_grpc.ClassifierStub(self._channel)
        self._kserve_stub: Any = None  # made by infer() on first use
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request, *, idempotent: bool = False):
        """One call; an idempotent one is retried while it ends UNAVAILABLE (see ``retry``)."""
        policy = self.retry if idempotent else RetryPolicy(attempts=1)
        try:
            return call_with_retries(
                lambda time_left: method(request, timeout=time_left, metadata=self._metadata),
                self.timeout,
                policy,
                on_retry=self._count_retry,
            )
        except grpc.RpcError as error:
            raise ClientError(error.code(), error.details() or "") from None

    def _count_retry(self, error: grpc.RpcError) -> None:
        self.retried += 1

    def classify(
        self,
        images: ImageSource | Sequence[ImageSource],
        *,
        model: str,
        top_k: int = 5,
        profile: bool = False,
        version: str = "",
        profile_runs: int = 0,
        profile_timeline: bool = False,
    ) -> pb.ClassifyResponse:
        """Classify encoded images (file paths or bytes: JPEG, PNG, ... of any size) in one request.

        ``profile_timeline``: with ``profile``, also every measured run's kernels (for a trace).
        """
        batch = [images] if isinstance(images, str | Path | bytes) else list(images)
        request = pb.ClassifyRequest(
            model=model,
            version=version,
            images=[_read(i) for i in batch],
            top_k=top_k,
            profile=profile,
            profile_runs=profile_runs,
            profile_timeline=profile_timeline,
        )
        return self._call(self._classifier.Classify, request, idempotent=True)

    def classify_tensor(
        self,
        array: np.ndarray,
        *,
        model: str,
        top_k: int = 5,
        profile: bool = False,
        version: str = "",
        profile_runs: int = 0,
    ) -> pb.ClassifyResponse:
        """Classify an already preprocessed float32 NCHW batch."""
        array = np.ascontiguousarray(array, dtype="<f4")
        tensor = pb.Tensor(shape=array.shape, data=array.tobytes())
        request = pb.ClassifyRequest(
            model=model, version=version, tensor=tensor, top_k=top_k, profile=profile, profile_runs=profile_runs
        )
        return self._call(self._classifier.Classify, request, idempotent=True)

    def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], *, version: str = "", request_id: str = ""
    ) -> dict[str, np.ndarray]:
        """KServe v2 ModelInfer (what tritonclient's ``infer`` sends): every output by name."""
        # Imported here, not with the package: KServe's messages (``inference.*``) cannot share a
        # process with tritonclient's, and scripts using tritonclient import graphgen_client.local.
        from graphgen_protos import kserve_v2_pb2 as kpb
        from graphgen_protos import kserve_v2_pb2_grpc

        if self._kserve_stub is None:
            self._kserve_stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        request = kpb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
        for name, array in inputs.items():
            array = np.ascontiguousarray(array)
            datatype = next((k for k, v in DATATYPES.items() if np.dtype(v) == array.dtype), None)
            if datatype is None:
                raise ValueError(f"input {name!r}: no KServe datatype for {array.dtype}")
            request.inputs.add(name=name, datatype=datatype, shape=array.shape)
            request.raw_input_contents.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
        answer = self._call(self._kserve_stub.ModelInfer, request, idempotent=True)
        return {tensor.name: _decode(tensor, raw) for tensor, raw in zip(answer.outputs, answer.raw_output_contents)}

    def models(self) -> list[pb.ModelInfo]:
        return list(self._call(self._classifier.ListModels, pb.ListModelsRequest(), idempotent=True).models)

    def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING, ... for the server as a whole ("") or one service."""
        answer = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

    def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Poll the health service until it says SERVING (raises TimeoutError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                last = self.health()
                if last == "SERVING":
                    return
            except ClientError as error:
                last = str(error)
            time.sleep(0.1)
        raise TimeoutError(f"{self.address} not serving after {timeout:.0f}s ({last})")
