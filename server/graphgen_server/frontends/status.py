"""The one place that turns a failure into a status code, for gRPC and HTTP alike.

The core raises :mod:`graphgen_server.core.errors`' exceptions (never gRPC or HTTP types).
:func:`status_of` chooses the gRPC status (from :data:`GRPC_STATUS`) and :func:`http_status_of`
the HTTP one (from :data:`HTTP_STATUS`, Triton's REST statuses); :func:`abort_with_status` is how a
gRPC servicer answers with it. A client's mistake is never INTERNAL: anything unexpected is logged
with its traceback and answered INTERNAL with a short message, and the server goes on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc

from graphgen.preprocess import ImageError
from graphgen_server.core.errors import (
    AlreadyExists,
    InvalidArgument,
    ModelUnavailable,
    NotFound,
    QueueFull,
    Refused,
    ServingError,
    Unsupported,
)
from graphgen_server.frontends.grpc_wire import Undecodable

log = logging.getLogger("graphgen_server")

# The gRPC status of each failure the core raises (a subclass answers as its nearest listed class).
GRPC_STATUS: dict[type[ServingError], grpc.StatusCode] = {
    ServingError: grpc.StatusCode.UNKNOWN,
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Refused: grpc.StatusCode.FAILED_PRECONDITION,
    ModelUnavailable: grpc.StatusCode.UNAVAILABLE,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Unsupported: grpc.StatusCode.UNIMPLEMENTED,
}


# gRPC sends the message percent-encoded in a header (non-ASCII bytes take 3 characters), and a
# client drops a header over 8 KiB with RESOURCE_EXHAUSTED instead of the status: messages echo
# what the request held (a model name, a datatype string), so they are cut to fit.
MAX_DETAILS = 4000
CUT = " ... "


def _encoded_size(text: str) -> int:
    return sum(1 if 0x20 <= b < 0x7F and b != 0x25 else 3 for b in text.encode())


def _longest_prefix(text: str, limit: int) -> str:
    fits, too_long = 0, min(len(text), limit) + 1  # a character takes at least one byte
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        fits, too_long = (middle, too_long) if _encoded_size(text[:middle]) <= limit else (fits, middle)
    return text[:fits]


def clamp(message: str, limit: int = MAX_DETAILS) -> str:
    """``message`` cut in the middle (its start and its end say the most) to ``limit`` encoded bytes."""
    if len(message) <= limit and _encoded_size(message) <= limit:  # (each character takes a byte or more)
        return message
    half = (limit - len(CUT)) // 2
    return _longest_prefix(message, half) + CUT + _longest_prefix(message[::-1], half)[::-1]


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message a failure is answered with."""
    if isinstance(error, ServingError):
        code = next(GRPC_STATUS[kind] for kind in type(error).__mro__ if kind in GRPC_STATUS)
        return code, str(error)
    if isinstance(error, ImageError):  # raised by graphgen.preprocess while decoding
        return grpc.StatusCode.INVALID_ARGUMENT, f"images: {error}"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); the server log has the details"


# The HTTP status of each gRPC status, as Triton's REST API answers (HttpCodeFromError in its
# http_server.cc: client mistakes and ALREADY_EXISTS 400, an unknown model 404, not ready or
# shutting down 503, UNSUPPORTED 501), with 401 and 429 where HTTP has a name for it.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.CANCELLED: 400,
    grpc.StatusCode.ALREADY_EXISTS: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status answering what gRPC answers with ``code`` (500 for INTERNAL, UNKNOWN, ...)."""
    return HTTP_STATUS.get(code, 500)


def http_status_of(error: BaseException) -> tuple[int, str]:
    """The HTTP status and message a failure is answered with (the same failure, the same words)."""
    code, message = status_of(error)
    return http_status(code), message


# An async servicer method: (self, request, context) -> response.
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def abort_with_status(handler: Handler) -> Handler:
    """Wrap an async servicer method (of a servicer with a ``gate``) so each failure ends the call with its status."""

    @functools.wraps(handler)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            async with self.gate.call():
                if isinstance(request, Undecodable):
                    raise InvalidArgument("request", f"not a valid {request.message_type} message ({request.error})")
                return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise  # context.abort() was already called
        except Exception as error:
            code, message = status_of(error)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed", handler.__name__)
            else:
                log.debug("%s: %s %s", handler.__name__, code.name, message)
            await context.abort(code, clamp(message))

    return cast(Handler, wrapper)
