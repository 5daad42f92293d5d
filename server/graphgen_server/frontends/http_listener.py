"""An aiohttp application on a socket bound when the server starts, before any model loads.

A port in use then stops the server at once, before minutes of model loading. The connections
are aiohttp's with two settings of graphgen's (:func:`runner_options`): bodies arrive as sent
(the routes inflate them, bounded: :mod:`graphgen_server.frontends.http_body`), and a request's
header must be complete within the header timeout.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

DEFAULT_HEADER_TIMEOUT_S = 75.0


class _MalformedHttpBriefly(logging.Filter):
    """aiohttp logs every malformed HTTP message at ERROR with a traceback ("Error handling request"):
    anyone who reaches the port could fill the log with them. Such a client's mistake is one INFO line,
    as graphgen's other refusals are; errors of aiohttp itself keep their level and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and error.code < 500:
            record.msg = f"{record.getMessage()}: malformed HTTP, answered {error.code} ({error.message!r})"
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


CONNECTION_LOG = logging.getLogger("graphgen_server.http")
CONNECTION_LOG.addFilter(_MalformedHttpBriefly())


def runner_options(header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S) -> dict[str, Any]:
    """aiohttp's connection settings for graphgen's listeners.

    - ``auto_decompress=False``: aiohttp's parser would inflate a gzip body on the event loop as it
      arrives, before any handler (and its token check) runs.
    - ``keepalive_timeout``: aiohttp closes a connection that has not completed a request's header
      this long after it opened or after its previous answer (the timer is not reset by bytes that
      trickle in), so it is the header timeout, and the idle keep-alive timeout with it. 75 s
      (aiohttp's own web.run_app default) stays above the 60 s for which reverse proxies such as
      nginx keep idle upstream connections, so a proxy does not reuse one the server is closing.
    - ``logger``: malformed HTTP is logged as one line (:class:`_MalformedHttpBriefly`).
    """
    return {"auto_decompress": False, "keepalive_timeout": header_timeout_s, "logger": CONNECTION_LOG}


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

    def __init__(
        self,
        what: str,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        shared: bool = False,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    ) -> None:
        self.what, self.tls, self.header_timeout_s = what, tls, header_timeout_s
        self.socket = bind(host, port, what, shared)
        self.port: int = self.socket.getsockname()[1]
        self._runner: web.AppRunner | None = None

    async def start(self, app: web.Application) -> None:
        options = runner_options(self.header_timeout_s)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, **options)
        await self._runner.setup()
        await web.SockSite(self._runner, self.socket, ssl_context=self.tls, shutdown_timeout=1.0).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        else:
            self.socket.close()
