"""Read and write ONNX model files.

Reading (:func:`load_model`) refuses a file that is not an ONNX model, or whose external-data
references point outside the model's own directory (absolute paths, ``..``, symlinks out:
onnx CVE-2024-27318/27319), with a :class:`ModelFileError` naming what is wrong.

Writing (:func:`save_model`) avoids building one giant protobuf message.

Serialising a model through protobuf copies every weight twice (array → TensorProto →
serialized bytes), which for VGG's 0.5 GB dominates a build. Instead the model is written as
its small skeleton (everything but the large initializers) with the large initializers streamed
straight from their arrays onto the end of the skeleton's ``ModelProto.graph`` field: its length
prefix counts them, and a message's fields may come in any order, so every reader sees one graph.
The graph must stay one field: protobuf's own parsers would merge a second occurrence of
``ModelProto.graph`` into the first, but Netron's reader keeps only the last (an empty graph).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from graphgen.errors import GraphgenError
from graphgen.files import not_a_file, text_hint

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


def _tensor_header(name: str, tensor: ir.TensorProtocol) -> bytes:
    """The TensorProto fields of an initializer except its data."""
    header = onnx.TensorProto(name=name, data_type=tensor.dtype.value, dims=list(tensor.shape.numpy()))
    return header.SerializeToString()


def save_model(model: ir.Model, path: str | Path) -> Path:
    """Write ``model`` to ``path`` as one self-contained .onnx file (the input is not modified)."""
    path = Path(path)
    skeleton = model.clone()  # shares tensors; only the skeleton's initializer table changes
    # Large tensors, and any tensor still in an external file (the skeleton would keep a reference
    # relative to the old location), are written from their arrays.
    streamed = [
        (name, tensor)
        for name, value in skeleton.graph.initializers.items()
        if (tensor := value.const_value) is not None
        and (tensor.size >= STREAM_THRESHOLD or isinstance(tensor, ir.ExternalTensor))
    ]
    for name, _ in streamed:
        del skeleton.graph.initializers[name]
    proto = ir.serde.serialize_model(skeleton)
    graph = proto.graph.SerializeToString()
    proto.ClearField("graph")
    head = proto.SerializeToString()

    records = []
    for name, tensor in streamed:
        data = np.ascontiguousarray(tensor.numpy())
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        header = _tensor_header(name, tensor)
        tensor_length = len(header) + len(_key(_TENSOR_RAW_DATA, data.nbytes)) + data.nbytes
        records.append((header, data, tensor_length))
    fragment_length = sum(len(_key(_GRAPH_INITIALIZER, n)) + n for _, _, n in records)

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        file.write(head)
        file.write(_key(_MODEL_GRAPH, len(graph) + fragment_length))
        file.write(graph)
        for header, data, tensor_length in records:
            file.write(_key(_GRAPH_INITIALIZER, tensor_length))
            file.write(header)
            file.write(_key(_TENSOR_RAW_DATA, data.nbytes))
            file.write(data.data.cast("B"))
    return path


class ModelFileError(GraphgenError, ValueError):
    """An .onnx file that cannot be read safely."""


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                yield from _tensors(subgraph)


def _check_external_data(proto: onnx.ModelProto, directory: Path) -> None:
    root = directory.resolve()
    for tensor in _tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        target = (root / location).resolve()  # resolves '..' and symlinks
        if not location or Path(location).is_absolute() or not target.is_relative_to(root):
            raise ModelFileError(
                f"tensor {tensor.name!r} refers to external data outside the model's directory: {location!r}"
            )
        if not target.is_file():
            raise ModelFileError(f"tensor {tensor.name!r} refers to missing external data {location!r}")


def check_model_file(path: str | Path) -> onnx.ModelProto:
    """Parse an .onnx file (its external data unread), refusing corrupt files and external data
    outside its directory; what another runtime (onnxruntime) may then load."""
    path = Path(path)
    problem = not_a_file(path, "an .onnx model file")
    if problem:
        raise ModelFileError(problem)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError):
        raise ModelFileError(f"{path}: not a readable ONNX model{text_hint(path)}") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelFileError(f"{path}: not an ONNX model (no graph)")
    _check_external_data(proto, path.parent)
    return proto


def load_model(path: str | Path) -> ir.Model:
    """Read an .onnx file, refusing corrupt files and external data outside its directory."""
    path = Path(path)
    proto = check_model_file(path)
    try:
        model = ir.serde.deserialize_model(proto)
    except (ir.serde.SerdeError, ValueError, TypeError, KeyError, IndexError) as error:
        # A protobuf that parses can still hold invalid ONNX (unknown dtypes, bad attributes).
        raise ModelFileError(f"{path}: not a valid ONNX model ({type(error).__name__}: {str(error)[:200]})") from None
    ir.external_data.set_base_dir(model.graph, str(path.parent))
    return model
