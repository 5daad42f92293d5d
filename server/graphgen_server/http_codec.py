"""KServe v2 HTTP/REST bodies ↔ KServe's protobuf messages (the ones the gRPC servicer takes).

An inference request is JSON, optionally followed by the binary tensor data extension: the
``Inference-Header-Content-Length`` header gives the JSON's length, and each input whose
``parameters`` hold ``binary_data_size`` takes that many bytes of what follows, in order.
JSON values (nested or flat, row-major) go to the message's typed contents, binary data to
``raw_input_contents``; the servicer checks them against the model as it checks any gRPC call.
Outputs are JSON arrays unless the output asks ``binary_data`` (or the request
``binary_data_output``); the ``classification`` parameter asks for the top classes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_server.errors import InvalidArgument

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_DATA_SIZE, BINARY_DATA, BINARY_DATA_OUTPUT = "binary_data_size", "binary_data", "binary_data_output"
CLASSIFICATION = "classification"

# KServe datatype → numpy dtype of its little-endian bytes on the wire.
DTYPES = {
    "BOOL": "?", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "UINT8": "<u1", "UINT16": "<u2",
    "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip
_INT64_TYPES = (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)


def parse_json(text: bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(what, f"not valid JSON ({error})") from None


def _object(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidArgument(field, f"must be a JSON object, got {type(value).__name__}")
    return value


def _flatten(values: Any, field: str) -> Iterator[Any]:
    if isinstance(values, list):
        for value in values:
            yield from _flatten(value, field)
    elif isinstance(values, bool | int | float | str):
        yield values
    else:
        raise InvalidArgument(field, f"holds a {type(values).__name__}; expected numbers, booleans or strings")


def _set_parameter(parameter: pb.InferParameter, value: Any, field: str) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    elif isinstance(value, str):
        parameter.string_param = value
    else:
        raise InvalidArgument(field, f"must be a boolean, number or string, got {type(value).__name__}")


def infer_request(
    body: bytes, header_length: str | None, model: str, version: str
) -> tuple[pb.ModelInferRequest, dict[str, bool]]:
    """The ModelInferRequest a REST body carries, and per requested output whether it goes back binary."""
    if header_length is None:
        header, binary = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidArgument(HEADER_LENGTH, f"must be a byte count, got {header_length!r}") from None
        if not 0 < length <= len(body):
            raise InvalidArgument(HEADER_LENGTH, f"{length} is not within the body's {len(body)} bytes")
        header, binary = body[:length], body[length:]
    document = _object(parse_json(header, "request"), "request")
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    if "id" in document:
        if not isinstance(document["id"], str):
            raise InvalidArgument("id", "must be a string")
        request.id = document["id"]
    parameters = _object(document.get("parameters", {}), "parameters")
    binary_default = parameters.get(BINARY_DATA_OUTPUT, False)
    if not isinstance(binary_default, bool):
        raise InvalidArgument(f"parameters.{BINARY_DATA_OUTPUT}", "must be true or false")
    for key, value in parameters.items():
        if key != BINARY_DATA_OUTPUT:
            _set_parameter(request.parameters[key], value, f"parameters.{key}")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument("inputs", "must be a non-empty list of tensors")
    offset = 0
    for position, tensor in enumerate(inputs):
        offset = _add_input(request, _object(tensor, f"inputs[{position}]"), position, binary, offset)
    if offset != len(binary):
        raise InvalidArgument("binary data", f"{len(binary) - offset} bytes after the JSON are claimed by no input")
    return request, _add_outputs(request, document.get("outputs", []), binary_default)


def _add_input(request: pb.ModelInferRequest, tensor: dict, position: int, binary: bytes, offset: int) -> int:
    field = f"inputs[{position}]"
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise InvalidArgument(field, "needs a 'name' and a 'datatype' (strings)")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidArgument(f"{field}.shape", f"must be a list of integers, got {shape!r}")
    if datatype not in DTYPES and datatype != "BYTES":
        known = ", ".join([*DTYPES, "BYTES"])
        raise InvalidArgument(f"{field}.datatype", f"unknown datatype {datatype!r} (KServe datatypes: {known})")
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    parameters = _object(tensor.get("parameters", {}), f"{field}.parameters")
    size = parameters.get(BINARY_DATA_SIZE)
    if size is None:
        if "data" not in tensor:
            raise InvalidArgument(field, f"has no 'data' (or '{BINARY_DATA_SIZE}' with the binary data extension)")
        request.raw_input_contents.append(_json_to_raw(datatype, tensor["data"], f"{field}.data"))
        return offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
        raise InvalidArgument(
            f"{field}.parameters.{BINARY_DATA_SIZE}", f"{size!r} bytes do not fit the {len(binary) - offset} sent"
        )
    if "data" in tensor:
        raise InvalidArgument(field, f"has both 'data' and '{BINARY_DATA_SIZE}': send one")
    request.raw_input_contents.append(binary[offset : offset + size])
    return offset + size


def _json_to_raw(datatype: str, data: Any, field: str) -> bytes:
    """JSON values (nested or flat, row-major) as the raw bytes of ``datatype``; the shape is checked later."""
    if datatype == "BYTES":
        return serialize_bytes(
            [v.encode() if isinstance(v, str) else json.dumps(v).encode() for v in _flatten(data, field)]
        )
    dtype = np.dtype(DTYPES[datatype])
    try:
        values = np.asarray(data)  # numpy parses the (nested) lists in C: JSON tensors are large
    except ValueError:
        raise InvalidArgument(field, "nested lists of unequal lengths") from None
    # The JSON type must fit the datatype's kind: no strings or nulls, no booleans as numbers and
    # numbers as booleans, no fractions for integers (casting would truncate 1.5 silently).
    allowed = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[dtype.kind]
    if values.size == 0:
        return b""  # (the declared shape, checked later, says how many values were due)
    if values.dtype.kind not in allowed:
        raise InvalidArgument(field, f"holds {_kind_name(values)}, not {datatype} values")
    with np.errstate(over="ignore"):  # a float beyond FP16/FP32 becomes inf, which the model check refuses
        cast = values.astype(dtype)
    if dtype.kind in "iu" and not np.array_equal(cast, values):
        raise InvalidArgument(field, f"values out of the range of {datatype}")
    return cast.astype(dtype.newbyteorder("<"), copy=False).tobytes()


def _kind_name(values: np.ndarray) -> str:
    return {"b": "booleans", "i": "integers", "u": "integers", "f": "fractional numbers", "U": "strings"}.get(
        values.dtype.kind, "values that are not numbers (null, objects or mixed types)"
    )


def _add_outputs(request: pb.ModelInferRequest, outputs: Any, binary_default: bool) -> dict[str, bool]:
    if not isinstance(outputs, list):
        raise InvalidArgument("outputs", "must be a list")
    binary = {}
    for position, output in enumerate(outputs):
        field = f"outputs[{position}]"
        output = _object(output, field)
        name = output.get("name")
        if not isinstance(name, str):
            raise InvalidArgument(f"{field}.name", "must be a string")
        added = request.outputs.add(name=name)
        parameters = _object(output.get("parameters", {}), f"{field}.parameters")
        wants_binary = parameters.get(BINARY_DATA, binary_default)
        if not isinstance(wants_binary, bool):
            raise InvalidArgument(f"{field}.parameters.{BINARY_DATA}", "must be true or false")
        binary[name] = wants_binary
        for key, value in parameters.items():
            if key != BINARY_DATA:
                _set_parameter(added.parameters[key], value, f"{field}.parameters.{key}")
    if not outputs and binary_default:
        binary[""] = True  # every output
    return binary


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


def infer_response(response: pb.ModelInferResponse, binary: dict[str, bool]) -> tuple[bytes, int | None]:
    """The REST body of a ModelInferResponse, and the JSON's length when binary data follows it."""
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        document["id"] = response.id
    if response.parameters:  # (graphgen's per-layer profile travels here)
        document["parameters"] = {key: _parameter_value(value) for key, value in response.parameters.items()}
    outputs, blobs = [], []
    for tensor, raw in zip(response.outputs, response.raw_output_contents):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if binary.get(tensor.name, binary.get("", False)):
            entry["parameters"] = {BINARY_DATA_SIZE: len(raw)}
            blobs.append(raw)
        elif tensor.datatype == "BYTES":
            entry["data"] = [e.decode("utf-8", errors="replace") for e in deserialize_bytes(raw)]
        else:
            entry["data"] = np.frombuffer(raw, dtype=DTYPES[tensor.datatype]).tolist()
        outputs.append(entry)
    document["outputs"] = outputs
    header = json.dumps(document, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def _parameter_value(parameter: pb.InferParameter) -> Any:
    kind = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, kind) if kind else None


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
