"""Servicers registered so that a request gRPC cannot parse still reaches its handler.

gRPC's generated ``add_*Servicer_to_server`` parse each request before the handler runs and
answer bytes that are not the method's message with UNKNOWN (and a traceback in the log). Here a
request that does not parse becomes an :class:`Undecodable`, which the handler's
:func:`~graphgen_server.frontends.status.abort_with_status` answers INVALID_ARGUMENT, naming the
message type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from graphgen_server.frontends.raw_tensors import parse_with_raw


class Undecodable:
    """A request whose bytes are not the message its method takes."""

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message_type, self.error = message_type, error


# Requests whose tensor bytes are read in place (a field's number): see frontends/raw_tensors.py.
RAW_FIELDS = {"inference.ModelInferRequest": 7}


def tolerant_parser(message_class: type[Message]) -> Callable[[bytes], Any]:
    """The parsed request (:class:`~graphgen_server.frontends.raw_tensors.WithRaw` for a large one
    with tensor bytes), or an :class:`Undecodable`."""
    name = message_class.DESCRIPTOR.full_name
    parse = message_class.FromString
    if name in RAW_FIELDS:
        parse = parse_with_raw(message_class.FromString, RAW_FIELDS[name])

    def tolerant(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as error:
            return Undecodable(name, error)

    return tolerant


def serialize(response: Any) -> bytes:
    """A message, or a response already in its wire form (:class:`~graphgen_server.frontends.raw_tensors.Serialized`)."""
    return response.SerializeToString()


def add_servicer(server: grpc.aio.Server, servicer: object, service: ServiceDescriptor) -> None:
    """Register every method of ``service`` (unary, or streaming both ways) on ``server``, served by ``servicer``."""
    handlers = {}
    for method in service.methods:
        if method.client_streaming != method.server_streaming:
            raise ValueError(f"{service.full_name}/{method.name}: one-way streams are not registered here")
        request = message_factory.GetMessageClass(method.input_type)
        make = grpc.stream_stream_rpc_method_handler if method.client_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=tolerant_parser(request),
            response_serializer=serialize,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
