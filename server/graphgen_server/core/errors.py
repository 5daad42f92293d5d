"""Every failure a call can meet, as the core raises it (never a gRPC or HTTP type).

The front-ends choose the status each is answered with
(:mod:`graphgen_server.frontends.status`). :func:`failure_reason` labels a failure as Triton's
metrics do; the statistics keep that label.
"""

from __future__ import annotations

import asyncio

from graphgen.preprocess import ImageError


class ServingError(Exception):
    """A failure with a known cause (each subclass has its status in the front-ends)."""


class NotFound(ServingError):
    """No such model, or no such version of it."""


class InvalidArgument(ServingError):
    """The request is malformed; the message starts with the field at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem

    def __reduce__(self) -> tuple[type[InvalidArgument], tuple[str, str]]:
        return type(self), (self.field, self.problem)  # (pickled across the control channel)


class AlreadyExists(ServingError):
    """What the request would create exists already (a shared-memory region's name)."""


class Unsupported(ServingError):
    """A feature of Triton's protocols this server does not offer (or not as started): the message says why."""


class QueueFull(ServingError):
    """The model's queue cannot take the request's images now."""


class Refused(ServingError):
    """The server is not set up to do this (model control is off), or a model's files cannot be served."""


class ModelUnavailable(ServingError):
    """The model exists but is not ready (it failed to load), or the server is shutting down."""


def failure_reason(error: BaseException) -> str:
    """Triton's ``reason`` label of a failed request: REJECTED (queue full), CANCELED, BACKEND, OTHER."""
    if isinstance(error, QueueFull):
        return "REJECTED"
    if isinstance(error, asyncio.CancelledError):
        return "CANCELED"
    if isinstance(error, ServingError | ImageError):
        return "OTHER"  # the request's own fault, or the model not ready
    return "BACKEND"
