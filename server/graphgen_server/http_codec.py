"""KServe v2 HTTP/REST bodies ↔ KServe's protobuf messages (the ones the gRPC servicer takes).

An inference request is JSON, optionally followed by the binary tensor data extension: the
``Inference-Header-Content-Length`` header gives the JSON's length, and each input whose
``parameters`` hold ``binary_data_size`` takes that many bytes of what follows, in order.
JSON values (nested or flat, row-major) are converted by :func:`graphgen_server.tensors.to_array`,
the one conversion of request data; they and binary data go to ``raw_input_contents``, and the
servicer checks them against the model as it checks any gRPC call.
Outputs are JSON arrays unless the output asks ``binary_data`` (or the request
``binary_data_output``); the ``classification`` parameter asks for the top classes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_server.errors import InvalidArgument
from graphgen_server.tensors import DATATYPES, InputTensor, to_array, to_bytes

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_DATA_SIZE, BINARY_DATA, BINARY_DATA_OUTPUT = "binary_data_size", "binary_data", "binary_data_output"
CLASSIFICATION = "classification"

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


def set_parameter(parameter: Any, value: Any, field: str) -> None:
    """A JSON value into an InferParameter (or a ModelRepositoryParameter, which has no double)."""
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float) and "double_param" in parameter.DESCRIPTOR.fields_by_name:
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
            set_parameter(request.parameters[key], value, f"parameters.{key}")
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
    if datatype not in DATATYPES and datatype != "BYTES":
        known = ", ".join([*DATATYPES, "BYTES"])
        raise InvalidArgument(f"{field}.datatype", f"unknown datatype {datatype!r} (KServe datatypes: {known})")
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    parameters = _object(tensor.get("parameters", {}), f"{field}.parameters")
    size = parameters.get(BINARY_DATA_SIZE)
    if size is None:
        if "data" not in tensor:
            raise InvalidArgument(field, f"has no 'data' (or '{BINARY_DATA_SIZE}' with the binary data extension)")
        request.raw_input_contents.append(_json_to_raw(request.inputs[-1], tensor["data"], field))
        return offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
        raise InvalidArgument(
            f"{field}.parameters.{BINARY_DATA_SIZE}", f"{size!r} bytes do not fit the {len(binary) - offset} sent"
        )
    if "data" in tensor:
        raise InvalidArgument(field, f"has both 'data' and '{BINARY_DATA_SIZE}': send one")
    request.raw_input_contents.append(binary[offset : offset + size])
    return offset + size


def _json_to_raw(tensor: pb.ModelInferRequest.InferInputTensor, data: Any, field: str) -> bytes:
    """JSON values (nested or flat, row-major) as the tensor's raw bytes, checked by tensors.to_array."""
    try:
        values = np.asarray(data).ravel()  # numpy parses the nested lists in C: JSON tensors are large
    except ValueError:
        raise InvalidArgument(f"{field}.data", "nested lists of unequal lengths") from None
    flat = cast(Sequence[Any], values)  # (an array is a sequence to to_array: len() and np.asarray)
    declared = InputTensor(tensor.name, tensor.datatype, list(tensor.shape), flat, field, f"{field}.data")
    return to_bytes(to_array(declared))


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
                set_parameter(added.parameters[key], value, f"{field}.parameters.{key}")
    if not outputs and binary_default:
        binary[""] = True  # every output
    return binary


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
            entry["data"] = np.frombuffer(raw, dtype=DATATYPES[tensor.datatype].newbyteorder("<")).tolist()
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
