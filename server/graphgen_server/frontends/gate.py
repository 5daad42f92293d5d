"""The shutdown gate every call of both protocols passes (gRPC servicers and HTTP routes alike)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from graphgen_server.core.errors import ModelUnavailable


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
