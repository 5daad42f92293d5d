"""What Netron needs from a file graphgen writes, checked without a browser.

Netron's protobuf reader keeps only the last occurrence of ``ModelProto.graph`` (protobuf's own
parsers merge them), so the file must hold the graph as one field; the browser test checks the
rendering itself.
"""

from __future__ import annotations

import onnx

from graphgen.onnx_io import save_model
from tests.support.models import built

MODEL_GRAPH_FIELD = 7


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position, shift = position + 1, shift + 7
        if not byte & 0x80:
            return value, position


def top_level_fields(data: bytes) -> list[int]:
    """Field numbers of a serialized message's top-level fields, in file order."""
    fields, position = [], 0
    while position < len(data):
        tag, position = _read_varint(data, position)
        field, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            _, position = _read_varint(data, position)
        elif wire_type == 2:
            length, position = _read_varint(data, position)
            position += length
        else:
            raise AssertionError(f"unexpected wire type {wire_type} in a ModelProto")
        fields.append(field)
    return fields


def test_saved_model_holds_its_graph_as_one_field(tmp_path):
    path = save_model(built("resnet18"), tmp_path / "resnet18.onnx")
    data = path.read_bytes()
    assert top_level_fields(data).count(MODEL_GRAPH_FIELD) == 1
    # The one graph field carries nodes and every initializer, streamed ones included.
    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    assert len(proto.graph.node) == 49
    assert "layer4.1.conv2.weight" in {t.name for t in proto.graph.initializer}
