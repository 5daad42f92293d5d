"""Write ONNX models without building one giant protobuf message.

Serialising a model through protobuf copies every weight twice (array → TensorProto →
serialized bytes), which for VGG's 0.5 GB dominates a build. Instead the model is written as
its small skeleton (everything but the large initializers), followed by a second occurrence of
``ModelProto.graph`` that holds only those initializers, each streamed straight from its array.
Protobuf parsers merge repeated occurrences of an embedded message field and append repeated
fields, so every reader (onnx, onnxruntime, Netron) sees one graph with all its initializers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

_MODEL_GRAPH = 7  # ModelProto.graph
_GRAPH_INITIALIZER = 5  # GraphProto.initializer
_TENSOR_RAW_DATA = 9  # TensorProto.raw_data
_LENGTH_DELIMITED = 2
STREAM_THRESHOLD = 1024  # elements; smaller tensors stay in the skeleton


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(field: int, length: int) -> bytes:
    """Tag and length of a length-delimited field."""
    return _varint(field << 3 | _LENGTH_DELIMITED) + _varint(length)


def _tensor_header(value: ir.Value) -> bytes:
    """The TensorProto fields of an initializer except its data."""
    tensor = value.const_value
    header = onnx.TensorProto(name=value.name, data_type=tensor.dtype.value, dims=list(tensor.shape.numpy()))
    return header.SerializeToString()


def save_model(model: ir.Model, path: str | Path) -> Path:
    """Write ``model`` to ``path`` as one self-contained .onnx file (the input is not modified)."""
    path = Path(path)
    skeleton = model.clone()  # shares tensors; only the skeleton's initializer table changes
    streamed = [
        value
        for value in skeleton.graph.initializers.values()
        if value.const_value is not None and value.const_value.size >= STREAM_THRESHOLD
    ]
    for value in streamed:
        del skeleton.graph.initializers[value.name]
    head = ir.serde.serialize_model(skeleton).SerializeToString()

    records = []
    for value in streamed:
        data = np.ascontiguousarray(value.const_value.numpy())
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        header = _tensor_header(value)
        tensor_length = len(header) + len(_key(_TENSOR_RAW_DATA, data.nbytes)) + data.nbytes
        records.append((header, data, tensor_length))
    fragment_length = sum(len(_key(_GRAPH_INITIALIZER, n)) + n for _, _, n in records)

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        file.write(head)
        if records:
            file.write(_key(_MODEL_GRAPH, fragment_length))
            for header, data, tensor_length in records:
                file.write(_key(_GRAPH_INITIALIZER, tensor_length))
                file.write(header)
                file.write(_key(_TENSOR_RAW_DATA, data.nbytes))
                file.write(memoryview(data).cast("B"))
    return path
