"""Tensor bytes over gRPC without copies: raw inputs read in place, raw outputs written once.

gRPC Python hands a request over as one ``bytes`` object. protobuf then copies a
``raw_input_contents`` entry into its own memory, and again into a new ``bytes`` each time the
field is read; a response's tensors were copied into bytes, into the message, and once more by
``SerializeToString``. For a batch of 224x224 images (4.8 MB) each copy is about a millisecond.

- :func:`parse_with_raw`: a large request's length-delimited field ``number`` is found by walking
  the message's top-level fields and left out of what protobuf parses; its entries are
  ``memoryview``\\ s of the received bytes (numpy reads them in place). Anything that does not walk
  cleanly is parsed by protobuf as a whole (and refused by it if it is not the message).
- :func:`with_raw`: a response written once: the message without its tensors, serialized, then
  each tensor's field header and bytes appended. Protobuf reads concatenated messages as one (a
  repeated field's entries in order), so the result is the message with the tensors in it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import DecodeError, Message

LENGTH_DELIMITED = 2
SMALL_BYTES = 64 << 10  # below this, protobuf's own copies cost less than walking the fields in Python


class Buffer(Protocol):
    def __len__(self) -> int: ...


@dataclass(frozen=True)
class WithRaw:
    """A request parsed without one of its fields, whose entries are views of the bytes received."""

    message: Any
    raw: list[memoryview]


class Serialized:
    """A response in its wire form already: gRPC sends these bytes as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # (what gRPC's serializer calls on a message)
        return self.data


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]  # (IndexError past the end: the caller's DecodeError)
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")


def split_field(data: bytes, number: int) -> tuple[bytes, list[memoryview]]:
    """``data`` (a serialized message) without its length-delimited field ``number``, and that
    field's entries as views of ``data``; DecodeError if ``data`` is not a well-formed message."""
    view, end = memoryview(data), len(data)
    kept: list[memoryview] = []
    found: list[memoryview] = []
    start = position = 0
    wanted = number << 3 | LENGTH_DELIMITED
    try:
        while position < end:
            key, after = _read_varint(data, position)
            wire = key & 7
            if wire == 0:
                _, after = _read_varint(data, after)
            elif wire == 1:
                after += 8
            elif wire == LENGTH_DELIMITED:
                length, after = _read_varint(data, after)
                if key == wanted:
                    kept.append(view[start:position])
                    found.append(view[after : after + length])
                    start = after + length
                after += length
            elif wire == 5:
                after += 4
            else:  # groups (deprecated) and invalid wire types: protobuf decides
                raise DecodeError(f"wire type {wire}")
            if after > end:
                raise DecodeError("truncated message")
            position = after
    except IndexError:
        raise DecodeError("truncated message") from None
    kept.append(view[start:end])
    return b"".join(kept), found


def parse_with_raw(parse: Callable[[bytes], Message], number: int) -> Callable[[bytes], Any]:
    """A request parser: a large message's field ``number`` as views (:class:`WithRaw`), else ``parse``."""

    def parsed(data: bytes) -> Any:
        if len(data) < SMALL_BYTES:
            return parse(data)
        try:
            head, raw = split_field(data, number)
        except DecodeError:
            return parse(data)  # (protobuf raises its own error for what is not the message)
        return WithRaw(parse(head), raw)

    return parsed


def with_raw(head: Message, number: int, raw: Sequence[Any]) -> Serialized:
    """``head`` serialized, with each of ``raw`` (bytes, or any C-contiguous buffer) appended as an
    entry of its length-delimited field ``number``: every tensor's bytes copied once."""
    tag = varint(number << 3 | LENGTH_DELIMITED)
    parts: list[Any] = [head.SerializeToString()]
    for data in raw:
        view = memoryview(data)
        size = view.nbytes
        parts += (tag, varint(size), view.cast("B") if size else b"")
    return Serialized(b"".join(parts))


def nested(number: int, message: Serialized) -> Serialized:
    """A message holding ``message`` (serialized already) as its field ``number``."""
    return Serialized(varint(number << 3 | LENGTH_DELIMITED) + varint(len(message.data)) + message.data)
