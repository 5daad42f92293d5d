"""An aiohttp application on a socket bound when the server starts, before any model loads.

A port in use then stops the server at once, before minutes of model loading.
"""

from __future__ import annotations

import socket
import ssl

from aiohttp import web


class BindError(OSError):
    """The address could not be bound (in use, or not an address of this machine)."""


def bind(host: str, port: int, what: str, shared: bool = False) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); ``shared``: with SO_REUSEPORT, beside
    the other front-end processes of this server (the supervisor made sure no other server holds it)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host.strip("[]"), port), family=family, backlog=128, reuse_port=shared)
    except OSError as error:
        raise BindError(f"cannot listen for {what} on {host}:{port}: {error.strerror or error}") from None


class HttpListener:
    """An aiohttp application on a socket bound at construction (before the models load)."""

    def __init__(self, what: str, host: str, port: int, tls: ssl.SSLContext | None, shared: bool = False) -> None:
        self.what, self.tls = what, tls
        self.socket = bind(host, port, what, shared)
        self.port: int = self.socket.getsockname()[1]
        self._runner: web.AppRunner | None = None

    async def start(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, self.socket, ssl_context=self.tls, shutdown_timeout=1.0).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        else:
            self.socket.close()
