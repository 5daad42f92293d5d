"""Servicers registered so that a request gRPC cannot parse still reaches its handler.

gRPC's generated ``add_*Servicer_to_server`` parse each request before the handler runs and
answer bytes that are not the method's message with UNKNOWN (and a traceback in the log). Here a
request that does not parse becomes an :class:`Undecodable`, which the handler's
:func:`~graphgen_server.frontends.status.abort_with_status` answers INVALID_ARGUMENT, naming the
message type.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message


class Undecodable:
    """A request whose bytes are not the message its method takes."""

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message_type, self.error = message_type, error


def tolerant_parser(message_class: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def parse(data: bytes) -> Message | Undecodable:
        try:
            return message_class.FromString(data)
        except DecodeError as error:
            return Undecodable(message_class.DESCRIPTOR.full_name, error)

    return parse


def add_servicer(server: grpc.aio.Server, servicer: object, service: ServiceDescriptor) -> None:
    """Register every method of ``service`` (unary, or streaming both ways) on ``server``, served by ``servicer``."""
    handlers = {}
    for method in service.methods:
        if method.client_streaming != method.server_streaming:
            raise ValueError(f"{service.full_name}/{method.name}: one-way streams are not registered here")
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        make = grpc.stream_stream_rpc_method_handler if method.client_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=tolerant_parser(request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
