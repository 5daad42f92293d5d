"""KServe v2 HTTP/REST bodies ↔ the runtime's Python types (no protobuf in between).

An inference request is JSON, optionally followed by the binary tensor data extension: the
``Inference-Header-Content-Length`` header gives the JSON's length, and each input whose
``parameters`` hold ``binary_data_size`` takes that many bytes of what follows, in order.
JSON values (nested or flat, row-major) are converted by :func:`graphgen_server.tensors.to_array`,
the one conversion of request data; they and binary data become the runtime's
:class:`~graphgen_server.tensors.InputTensor`, checked against the model as any call's.
Outputs are JSON arrays unless the output asks ``binary_data`` (or the request
``binary_data_output``); the ``classification`` parameter asks for the top classes. An input or
output may instead be in a registered shared-memory region (``shared_memory_region``,
``shared_memory_offset``, ``shared_memory_byte_size``: :mod:`graphgen_server.frontends.kserve_shm`);
such an output goes back without data, as Triton's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from graphgen_server.core.api import Inferred
from graphgen_server.core.errors import InvalidArgument
from graphgen_server.core.requests import Profiling, RequestedOutput, to_array
from graphgen_server.core.shared_memory import SharedMemory
from graphgen_server.frontends import kserve_common, kserve_shm
from graphgen_server.frontends.kserve_common import PROFILE_RESPONSE, deserialize_bytes, serialize_bytes
from graphgen_server.tensors import DATATYPES, InputTensor, to_bytes

__all__ = ["HEADER_LENGTH", "InferCall", "deserialize_bytes", "infer_request", "infer_response", "message_json"]

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_DATA_SIZE, BINARY_DATA, BINARY_DATA_OUTPUT = "binary_data_size", "binary_data", "binary_data_output"

_INT64_TYPES = (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)

# Arrays and objects nested deeper than this are refused before parsing: a tensor's nested lists
# are as deep as its rank (ONNX tensors have a handful of dimensions), the request wraps them in
# three more levels; Python's parser would hit its recursion limit near 1,000 levels.
MAX_JSON_DEPTH = 64
# Each byte of a JSON text mapped to what nesting sees in it: 1 opens, 2 closes, 3 quotes, 0 the rest.
_STRUCTURE = bytes(1 if b in b"[{" else 2 if b in b"]}" else 3 if b == ord('"') else 0 for b in range(256))
_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # a backslash and the character it escapes


@dataclass(frozen=True)
class InferCall:
    """What a REST inference request asks of the runtime, and how its outputs go back.

    ``binary``: per requested output name whether it is answered as binary data ("": every output);
    ``regions``: the outputs to be written to shared memory, by name.
    """

    id: str
    inputs: list[InputTensor]
    outputs: list[RequestedOutput]
    profile: Profiling
    binary: dict[str, bool]
    regions: dict[str, kserve_shm.RegionReference]


def parse_json(text: bytes | bytearray, what: str) -> Any:
    """JSON text parsed, refused (InvalidArgument) when it is not JSON or nests deeper than MAX_JSON_DEPTH."""
    if (depth := nesting_depth(text)) > MAX_JSON_DEPTH:
        raise InvalidArgument(what, f"JSON nested {depth} levels deep: the server takes at most {MAX_JSON_DEPTH}")
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(what, f"not valid JSON ({error})") from None
    except RecursionError:  # (not reached within MAX_JSON_DEPTH; kept a client's mistake whatever the stack)
        raise InvalidArgument(what, f"JSON nested too deep: the server takes at most {MAX_JSON_DEPTH}") from None


def nesting_depth(text: bytes | bytearray) -> int:
    """How deep arrays and objects nest in JSON text (brackets inside strings not counted), in numpy's
    loops over the brackets and quotes alone: ~8% of json.loads' time on a 23 MB nested tensor."""
    if b"\\" in text:
        text = _ESCAPE.sub(b"__", text)  # an escaped quote or bracket is a plain character
    marks = np.frombuffer(text.translate(_STRUCTURE), np.uint8)
    kinds = marks[np.flatnonzero(marks != 0)]
    in_string = (np.cumsum(kinds == 3) & 1).astype(bool)  # after an opening quote, up to its closing one
    steps = np.where(kinds == 1, 1, np.where(kinds == 2, -1, 0))
    steps[in_string] = 0
    return int(np.cumsum(steps).max(initial=0))


def _object(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidArgument(field, f"must be a JSON object, got {type(value).__name__}")
    return value


def parameters(value: Any, field: str, skip: str = "", floats: bool = True) -> dict[str, Any]:
    """A JSON ``parameters`` object, each value a KServe parameter (no float for a repository parameter)."""
    document = _object(value, field)
    for key, parameter in document.items():
        if key == skip:
            continue
        if isinstance(parameter, bool | int | str) or (floats and isinstance(parameter, float)):
            continue
        raise InvalidArgument(f"{field}.{key}", f"must be a boolean, number or string, got {type(parameter).__name__}")
    return document


def infer_request(
    body: bytes | bytearray, header_length: str | None, shared_memory: SharedMemory | None = None
) -> InferCall:
    """What a REST body asks the runtime, and per requested output whether it goes back binary
    (inputs in shared memory are read from ``shared_memory``'s regions)."""
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidArgument(HEADER_LENGTH, f"must be a byte count, got {header_length!r}") from None
        if not 0 < length <= len(body):
            raise InvalidArgument(HEADER_LENGTH, f"{length} is not within the body's {len(body)} bytes")
        header, binary = body[:length], memoryview(body)[length:]  # (the tensors' bytes: not copied)
    document = _object(parse_json(header, "request"), "request")
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument("id", "must be a string")
    request_parameters = parameters(document.get("parameters", {}), "parameters", skip=BINARY_DATA_OUTPUT)
    binary_default = request_parameters.get(BINARY_DATA_OUTPUT, False)
    if not isinstance(binary_default, bool):
        raise InvalidArgument(f"parameters.{BINARY_DATA_OUTPUT}", "must be true or false")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument("inputs", "must be a non-empty list of tensors")
    tensors, offset = [], 0
    for position, tensor in enumerate(inputs):
        added, offset = _input(_object(tensor, f"inputs[{position}]"), position, binary, offset, shared_memory)
        tensors.append(added)
    if offset != len(binary):
        raise InvalidArgument("binary data", f"{len(binary) - offset} bytes after the JSON are claimed by no input")
    outputs, binary_outputs, regions = _outputs(document.get("outputs", []), binary_default)
    profile = kserve_common.profiling(request_parameters)
    return InferCall(request_id, tensors, outputs, profile, binary_outputs, regions)


def _input(
    tensor: dict, position: int, binary: memoryview, offset: int, shared_memory: SharedMemory | None
) -> tuple[InputTensor, int]:
    field = f"inputs[{position}]"
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise InvalidArgument(field, "needs a 'name' and a 'datatype' (strings)")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidArgument(f"{field}.shape", f"must be a list of integers, got {shape!r}")
    if datatype not in DATATYPES and datatype != "BYTES":
        known = ", ".join([*DATATYPES, "BYTES"])
        raise InvalidArgument(f"{field}.datatype", f"unknown datatype {datatype!r} (KServe datatypes: {known})")
    tensor_parameters = parameters(tensor.get("parameters", {}), f"{field}.parameters")
    region = kserve_shm.region_reference(tensor_parameters, f"{field}.parameters")
    given = [
        w
        for w, there in (
            ("'data'", "data" in tensor),
            (f"'{BINARY_DATA_SIZE}'", BINARY_DATA_SIZE in tensor_parameters),
            (f"'{kserve_shm.REGION}'", region is not None),
        )
        if there
    ]
    if len(given) > 1:
        raise InvalidArgument(field, f"sets {' and '.join(given)}: send its values one way")
    if region is not None:
        if shared_memory is None:
            raise InvalidArgument(f"{field}.parameters.{kserve_shm.REGION}", "no shared-memory regions here")
        data = kserve_shm.input_data(shared_memory, region)
        return InputTensor(name, datatype, shape, data, field, region.byte_size_field), offset
    size = tensor_parameters.get(BINARY_DATA_SIZE)
    if size is None:
        if "data" not in tensor:
            raise InvalidArgument(field, f"has no 'data' (or '{BINARY_DATA_SIZE}' with the binary data extension)")
        raw = _json_to_raw(name, datatype, shape, tensor["data"], field)
        return InputTensor(name, datatype, shape, raw, field, f"{field}.data"), offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
        raise InvalidArgument(
            f"{field}.parameters.{BINARY_DATA_SIZE}", f"{size!r} bytes do not fit the {len(binary) - offset} sent"
        )
    data = binary[offset : offset + size]
    return InputTensor(name, datatype, shape, data, field, f"{field}.parameters.{BINARY_DATA_SIZE}"), offset + size


def _json_to_raw(name: str, datatype: str, shape: list[int], data: Any, field: str) -> bytes:
    """JSON values (nested or flat, row-major) as the tensor's raw bytes, checked by tensors.to_array."""
    try:
        values = np.asarray(data).ravel()  # numpy parses the nested lists in C: JSON tensors are large
    except ValueError:
        raise InvalidArgument(f"{field}.data", "nested lists of unequal lengths") from None
    flat = cast(Sequence[Any], values)  # (an array is a sequence to to_array: len() and np.asarray)
    return to_bytes(to_array(InputTensor(name, datatype, shape, flat, field, f"{field}.data")))


def _outputs(
    outputs: Any, binary_default: bool
) -> tuple[list[RequestedOutput], dict[str, bool], dict[str, kserve_shm.RegionReference]]:
    if not isinstance(outputs, list):
        raise InvalidArgument("outputs", "must be a list")
    requested, binary, regions = [], {}, {}
    for position, output in enumerate(outputs):
        field = f"outputs[{position}]"
        output = _object(output, field)
        name = output.get("name")
        if not isinstance(name, str):
            raise InvalidArgument(f"{field}.name", "must be a string")
        output_parameters = parameters(output.get("parameters", {}), f"{field}.parameters", skip=BINARY_DATA)
        wants_binary = output_parameters.get(BINARY_DATA, binary_default)
        if not isinstance(wants_binary, bool):
            raise InvalidArgument(f"{field}.parameters.{BINARY_DATA}", "must be true or false")
        classification = kserve_common.classification(output_parameters)
        region = kserve_shm.region_reference(output_parameters, f"{field}.parameters")
        kserve_shm.check_output(region, classification, f"{field}.parameters")
        if region is not None:
            if output_parameters.get(BINARY_DATA, False):
                raise InvalidArgument(
                    f"{field}.parameters", f"cannot set both '{kserve_shm.REGION}' and '{BINARY_DATA}'"
                )
            regions[name] = region
        binary[name] = wants_binary
        requested.append(RequestedOutput(name, field, classification))
    if not outputs and binary_default:
        binary[""] = True  # every output
    return requested, binary, regions


def infer_response(
    inferred: Inferred,
    request_id: str,
    binary: dict[str, bool],
    in_shared_memory: frozenset[str] | set[str] = frozenset(),
) -> tuple[bytes, int | None]:
    """The REST body of the runtime's result, and the JSON's length when binary data follows it
    (the outputs ``in_shared_memory`` were written to their regions: no data)."""
    document: dict[str, Any] = {"model_name": inferred.model, "model_version": inferred.version}
    if request_id:
        document["id"] = request_id
    if inferred.profile is not None:
        document["parameters"] = {PROFILE_RESPONSE: kserve_common.profile_json(inferred.profile)}
    outputs, blobs = [], []
    for output in inferred.outputs:
        array = output.array
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(array.shape)}
        if output.name in in_shared_memory:
            pass
        elif binary.get(output.name, binary.get("", False)):
            raw = serialize_bytes(list(array.ravel())) if output.datatype == "BYTES" else to_bytes(array)
            entry["parameters"] = {BINARY_DATA_SIZE: len(raw)}
            blobs.append(raw)
        elif output.datatype == "BYTES":
            entry["data"] = [e.decode("utf-8", errors="replace") for e in array.ravel()]
        else:
            entry["data"] = array.ravel().tolist()
        outputs.append(entry)
    document["outputs"] = outputs
    header = json.dumps(document, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def message_json(message: Message) -> dict:
    """A KServe message as Triton's REST API writes it: proto field names, 64-bit integers as numbers."""
    document = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(message, document)


def _numbers(message: Message, document: dict) -> dict:
    for field in message.DESCRIPTOR.fields:
        key = field.name
        if key not in document:
            continue
        value = getattr(message, key)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                continue
            if field.is_repeated:
                document[key] = [_numbers(v, d) for v, d in zip(value, document[key])]
            else:
                document[key] = _numbers(value, document[key])
        elif field.type in _INT64_TYPES:
            document[key] = [int(v) for v in value] if field.is_repeated else int(value)
    return document
