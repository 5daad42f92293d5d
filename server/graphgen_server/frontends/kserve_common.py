"""What both KServe v2 front-ends (gRPC in grpc_kserve.py, HTTP/REST in http_routes.py) answer, protocol-neutral.

Each front-end converts its wire format to these calls and back; the facts and rules live here
once: the server and model metadata, readiness, the repository index, the statistics as Triton's
``ModelStatistics`` (a dict in Triton's JSON field names), the ``profile``/``profile_runs`` and
``classification`` parameters (given as Python values: a protocol converts its own parameter
type first), the per-layer profile's wire form, and the checks before model control.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format

import graphgen
from graphgen.profiling.summary import Profile
from graphgen_server.core.api import Runtime
from graphgen_server.core.errors import InvalidArgument, NotFound, Refused
from graphgen_server.core.model_control import ModelControl
from graphgen_server.core.requests import Profiling
from graphgen_server.core.statistics import Duration, ModelStats
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.profiles import profile_message
from graphgen_server.tensors import TensorInfo

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["classification", "statistics", "system_shared_memory"]
CLASSIFICATION = "classification"
PROFILE, PROFILE_RUNS, PROFILE_RESPONSE = "profile", "profile_runs", "graphgen_profile"
# RepositoryModelLoad's parameters: a configuration override is taken; uploaded files ("file:<path>") are not.
CONFIG_PARAMETER, FILE_PARAMETER = "config", "file:"
# Triton features not served, and why (answered UNIMPLEMENTED / HTTP 501). A Triton built without
# tracing or logging answers UNAVAILABLE ("the server does not support trace"): gRPC clients may
# retry UNAVAILABLE, and this will not change, so graphgen answers UNIMPLEMENTED.
TRACE_REFUSED = "graphgen-server has no Triton tracing: ask Classify or ModelInfer for a per-layer profile instead"
LOGGING_REFUSED = "graphgen-server's log settings are its command line (--log-level)"
GENERATE_REFUSED = "graphgen-server serves classifiers: no generate extension"


def serialize_bytes(elements: list[bytes]) -> bytes:
    """KServe's BYTES layout: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def deserialize_bytes(raw: bytes) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        elements.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return elements


def server_metadata(control: ModelControl | None) -> dict[str, Any]:
    extensions = [*EXTENSIONS, *(["model_repository"] if control else [])]
    return {"name": "graphgen", "version": graphgen.__version__, "extensions": extensions}


def server_ready(runtime: Runtime, gate: CallGate) -> bool:
    """Ready while serving and at least one model is: a broken model is reported per model."""
    return not gate.closed and any(m.ready for m in runtime.all())


def model_ready(runtime: Runtime, name: str, version: str) -> bool:
    """Whether the named version serves: false for an unknown model or version too, as Triton answers
    (its InferenceServer::ModelIsReady ignores the lookup's failure); only a malformed version is refused."""
    try:
        return runtime.find(name, version).ready
    except NotFound:
        return False
    except InvalidArgument as error:
        if error.field == "model":  # (no name: Triton finds no such model either)
            return False
        raise


def model_metadata(runtime: Runtime, name: str, version: str) -> dict[str, Any]:
    model = runtime.ready(name, version)
    loaded = model.served()

    def tensor(info: TensorInfo) -> dict[str, Any]:
        return {"name": info.name, "datatype": info.datatype, "shape": info.dims}

    ready_versions = [v for v in runtime.versions(model.name) if runtime.find(model.name, v).ready]
    return {
        "name": model.name,
        "versions": [version] if version else ready_versions,  # (Triton's: the one named, else the ready ones)
        "platform": PLATFORM,
        "inputs": [tensor(i) for i in loaded.inputs],
        "outputs": [tensor(o) for o in loaded.outputs],
    }


def repository_index(runtime: Runtime, ready_only: bool) -> list[dict[str, str]]:
    return [
        {"name": m.name, "version": m.version, "state": "READY" if m.ready else "UNAVAILABLE", "reason": m.reason}
        for m in runtime.all()
        if m.ready or not ready_only
    ]


def check_statistics_request(runtime: Runtime, name: str, version: str) -> None:
    """Triton's refusals of a statistics request (TRITONSERVER_ServerModelStatistics): INVALID_ARG
    when the named model, or the named version, has no ready version."""
    if not name:
        return
    if version:
        with contextlib.suppress(NotFound):  # (only a malformed version is refused as such)
            runtime.find(name, version)
    ready = [m.version for m in runtime.all() if m.name == name and m.ready]
    if not ready:
        raise InvalidArgument("name", f"requested model '{name}' is not available (no ready version)")
    if version and version not in ready:
        raise InvalidArgument("version", f"requested model version is not available for model '{name}'")


async def ready_statistics(runtime: Runtime, name: str, version: str) -> list[dict[str, Any]]:
    """The statistics Triton answers: of ready versions only, after its refusals."""
    check_statistics_request(runtime, name, version)
    ready = {(m.name, m.version) for m in runtime.all() if m.ready}
    return [s for s in await statistics(runtime, name, version) if (s["name"], s["version"]) in ready]


async def statistics(runtime: Runtime, name: str, version: str) -> list[dict[str, Any]]:
    """Triton's ModelStatistics of the named model (one version, or all), or of every model if none named:
    summed over every front-end process."""
    return [_statistics(v.name, v.version, v.stats) for v in await runtime.statistics(name, version)]


def _duration(duration: Duration) -> dict[str, int]:
    return {"count": duration.count, "ns": duration.ns}


def _statistics(name: str, version: str, stats: ModelStats) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {stage: _duration(duration) for stage, duration in stats.stages().items()},
        "batch_stats": [
            {"batch_size": size, "compute_infer": _duration(d.compute_infer)}
            for size, d in sorted(stats.batches.items())
        ],
    }


def profiling(parameters: Mapping[str, Any]) -> Profiling:
    """A request's ``profile`` (bool) and ``profile_runs`` (int) parameters, as Python values."""
    profile, runs = False, 0
    if PROFILE in parameters:
        if not isinstance(parameters[PROFILE], bool):
            raise InvalidArgument(f"parameters.{PROFILE}", "must be a bool")
        profile = parameters[PROFILE]
    if PROFILE_RUNS in parameters:
        runs = parameters[PROFILE_RUNS]
        if isinstance(runs, bool) or not isinstance(runs, int):
            raise InvalidArgument(f"parameters.{PROFILE_RUNS}", "must be an integer")
    return Profiling(profile, runs, f"parameters.{PROFILE_RUNS}")


def classification(parameters: Mapping[str, Any]) -> Any:
    """A requested output's ``classification`` parameter as given (None: not asked; checked by the runtime)."""
    if CLASSIFICATION not in parameters:
        return None
    value = parameters[CLASSIFICATION]
    return "nothing" if value is None else value  # a parameter holding no value is no count


def profile_json(profile: Profile) -> str:
    """The ``graphgen_profile`` response parameter: graphgen.v1.Profile (classifier.proto) as JSON."""
    return json_format.MessageToJson(profile_message(profile), indent=None)


def model_control(
    control: ModelControl | None, repository_name: str, parameters: Iterable[str], allowed: Iterable[str] = ()
) -> ModelControl:
    """The model control, once the request is one it honours (this server's repository, parameters it takes)."""
    if control is None:
        raise Refused("model control is off: start graphgen-server with --model-control to load and unload models")
    if repository_name:
        raise NotFound(f"repository {repository_name!r}: this server has one (leave repository_name empty)")
    given = set(parameters)
    uploads = sorted(p for p in given if p.startswith(FILE_PARAMETER))
    if uploads:
        raise InvalidArgument(
            "parameters", f"{uploads}: uploaded model files are refused (model files come from the repository only)"
        )
    refused = sorted(given - set(allowed))
    if refused:
        taken = f"taken: {sorted(allowed)}" if allowed else "none is taken"
        raise InvalidArgument("parameters", f"{refused} not supported ({taken})")
    return control


def config_override(values: Mapping[str, Any]) -> str | None:
    """RepositoryModelLoad's ``config`` parameter (a protocol's parameters as Python values): Triton's
    JSON form of the model configuration, used instead of config.pbtxt; None when not given."""
    if CONFIG_PARAMETER not in values:
        return None
    text = values[CONFIG_PARAMETER]
    if not isinstance(text, str):
        raise InvalidArgument(
            f"parameters.{CONFIG_PARAMETER}",
            f"must be a string (the model configuration as JSON), got {type(text).__name__}",
        )
    return text
