"""Tensor bytes read in place and written once: the same messages protobuf reads and writes."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_server.frontends.grpc_wire import serialize, tolerant_parser
from graphgen_server.frontends.raw_tensors import (
    SMALL_BYTES,
    Serialized,
    WithRaw,
    nested,
    parse_with_raw,
    split_field,
    varint,
    with_raw,
)


def big_request(rows: int = 8) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", model_version="2", id="r1")
    request.parameters["profile"].bool_param = True
    for name in ("a", "b"):
        x = np.arange(rows * 3 * 64 * 64, dtype=np.float32).reshape(rows, 3, 64, 64)
        request.inputs.add(name=name, datatype="FP32", shape=x.shape)
        request.raw_input_contents.append((x + (name == "b")).tobytes())
    request.outputs.add(name="logits").parameters["classification"].int64_param = 3
    return request


def test_varint_is_protobufs():
    for value in (0, 1, 127, 128, 300, 2**32, 2**63 - 1):
        message = pb.ModelStatisticsResponse()
        message.model_stats.add().inference_count = value
        assert varint(value) in message.SerializeToString()
    assert varint(300) == b"\xac\x02"


def test_raw_inputs_are_views_of_the_bytes_received_and_the_rest_parses_as_protobuf_does():
    request = big_request()
    data = request.SerializeToString()
    assert len(data) >= SMALL_BYTES
    parsed = tolerant_parser(pb.ModelInferRequest)(data)
    assert isinstance(parsed, WithRaw)
    assert [bytes(v) for v in parsed.raw] == list(request.raw_input_contents)
    assert all(v.obj is data for v in parsed.raw)  # not copied
    assert not parsed.message.raw_input_contents
    parsed.message.raw_input_contents.extend(request.raw_input_contents)
    assert parsed.message == request
    array = np.frombuffer(parsed.raw[1], np.float32)  # numpy reads them in place
    assert array[0] == 1.0 and not array.flags.writeable


def test_a_small_request_is_parsed_by_protobuf_alone():
    request = big_request(rows=1)
    request.ClearField("raw_input_contents")
    request.raw_input_contents.append(b"\0" * 16)
    assert tolerant_parser(pb.ModelInferRequest)(request.SerializeToString()) == request


@pytest.mark.parametrize("cut", [1, 2, 100, -1])
def test_a_message_that_does_not_walk_cleanly_is_protobufs_to_refuse(cut):
    data = big_request().SerializeToString()
    broken = data[:cut] if cut > 0 else data + b"\x0b"  # truncated, or a group start at the end
    with pytest.raises(DecodeError):
        split_field(broken, 7)
    parser = parse_with_raw(pb.ModelInferRequest.FromString, 7)
    try:
        outcome = parser(broken)
    except DecodeError:
        return  # protobuf refused it: what the tolerant parser answers INVALID_ARGUMENT
    assert not isinstance(outcome, WithRaw)  # protobuf parsed it (a prefix can be a message)


def test_outputs_written_once_read_as_the_message_protobuf_would_write():
    arrays = [np.arange(12, dtype=np.float16).reshape(3, 4), np.array([True, False]), np.zeros((0, 4), np.float32)]
    head = pb.ModelInferResponse(model_name="m", model_version="1", id="x")
    expected = pb.ModelInferResponse()
    for index, array in enumerate(arrays):
        head.outputs.add(name=f"o{index}", datatype="FP16", shape=array.shape)
    expected.CopyFrom(head)
    expected.raw_output_contents.extend([a.tobytes() for a in arrays])
    written = with_raw(head, 6, arrays)
    assert isinstance(written, Serialized) and serialize(written) == written.data
    assert pb.ModelInferResponse.FromString(written.data) == expected
    streamed = pb.ModelStreamInferResponse.FromString(nested(2, written).data)
    assert streamed.infer_response == expected and not streamed.error_message
