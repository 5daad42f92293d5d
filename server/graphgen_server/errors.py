"""Every failure a call can meet, and the one place that turns it into a status code.

The runtime raises these exceptions (never gRPC or HTTP types). :func:`status_of` chooses the gRPC
status and :func:`http_status_of` the HTTP one (from :data:`HTTP_STATUS`, Triton's REST statuses);
:func:`abort_with_status` is how a gRPC servicer answers with it. A client's mistake is never
INTERNAL: anything unexpected is logged with its traceback and answered INTERNAL with a short
message, and the server goes on. :func:`failure_reason` labels a failure as Triton's metrics do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc

from graphgen.preprocess import ImageError

log = logging.getLogger("graphgen_server")


class ServingError(Exception):
    """A failure with a known cause; ``code`` is the gRPC status it is answered with."""

    code = grpc.StatusCode.UNKNOWN


class NotFound(ServingError):
    """No such model, or no such version of it."""

    code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(ServingError):
    """The request is malformed; the message starts with the field at fault."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class QueueFull(ServingError):
    """The model's queue cannot take the request's images now."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Refused(ServingError):
    """The server is not set up to do this (model control is off), or a model's files cannot be served."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ModelUnavailable(ServingError):
    """The model exists but is not ready (it failed to load), or the server is shutting down."""

    code = grpc.StatusCode.UNAVAILABLE


class Undecodable:
    """A request whose bytes are not the message its method takes (see :mod:`graphgen_server.wire`)."""

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message_type, self.error = message_type, error


class CallGate:
    """Counts the calls being handled, and refuses new ones once closed (the start of a shutdown).

    gRPC's own stop cancels calls that arrived but were not yet handed to a handler (the client
    sees CANCELLED); closing this gate first makes such late calls fail with UNAVAILABLE instead,
    a status clients know to retry elsewhere, while the calls already inside finish.
    """

    def __init__(self) -> None:
        self.closed = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        if self.closed:
            raise ModelUnavailable("the server is shutting down; retry on another replica")
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def close(self, timeout: float) -> bool:
        """Refuse new calls and wait up to ``timeout`` s for those inside; True if they all finished."""
        self.closed = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


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
        return error.code, str(error)
    if isinstance(error, ImageError):  # raised by graphgen.preprocess while decoding
        return grpc.StatusCode.INVALID_ARGUMENT, f"images: {error}"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); the server log has the details"


# The HTTP status of each gRPC status, as Triton's REST API answers (client mistakes 400, an
# unknown model 404, not ready or shutting down 503), with 401 and 429 where HTTP has a name for it.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.CANCELLED: 400,
    grpc.StatusCode.ALREADY_EXISTS: 409,
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


def failure_reason(error: BaseException) -> str:
    """Triton's ``reason`` label of a failed request: REJECTED (queue full), CANCELED, BACKEND, OTHER."""
    if isinstance(error, QueueFull):
        return "REJECTED"
    if isinstance(error, asyncio.CancelledError):
        return "CANCELED"
    if isinstance(error, ServingError | ImageError):
        return "OTHER"  # the request's own fault, or the model not ready
    return "BACKEND"


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
