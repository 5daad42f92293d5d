"""Who may call the server: TLS (optionally mutual) and a bearer token, for deployments beyond loopback.

The token is compared in constant time and never logged; calls without it, or with another,
end UNAUTHENTICATED before their request is even parsed. The health service stays open (load
balancers and container health checks probe it without credentials; it tells only whether the
server serves). TLS with ``--tls-client-ca`` requires every client to present a certificate
signed by that CA (mutual TLS).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import ssl
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from graphgen_server.config import ServerConfig

log = logging.getLogger("graphgen_server")

OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
AUTHORIZATION = "authorization"


class SecurityError(ValueError):
    """A TLS or token setting that cannot be used (a missing file, an empty token)."""


def read_token(path: Path) -> str:
    """The bearer token in ``path`` (surrounding whitespace removed), which must not be empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as error:
        raise SecurityError(f"--token-file {path}: cannot read it ({type(error).__name__})") from None
    if not token:
        raise SecurityError(f"--token-file {path}: the file is empty (expected one token)")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise SecurityError(f"--token-file {path}: expected one token, found spaces or control characters inside")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("--token-file %s can be read by other users (chmod 600 it)", path)
    return token


def read_pem(path: Path | None, option: str) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SecurityError(f"{option} {path}: cannot read it ({error.strerror})") from None
    if b"-----BEGIN " not in data:
        raise SecurityError(f"{option} {path}: not a PEM file")
    return data


def server_credentials(cert: Path | None, key: Path | None, client_ca: Path | None) -> grpc.ServerCredentials | None:
    """TLS credentials from PEM files (None without a certificate: plaintext)."""
    if cert is None and key is None:
        if client_ca is not None:
            raise SecurityError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
        return None
    if cert is None or key is None:
        raise SecurityError("--tls-cert and --tls-key go together")
    pair = (read_pem(key, "--tls-key"), read_pem(cert, "--tls-cert"))
    ca = read_pem(client_ca, "--tls-client-ca")
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The gRPC server's TLS settings for HTTPS (mutual TLS with ``tls_client_ca``)."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_client_ca is not None:
        context.load_verify_locations(config.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def exposure_warnings(host: str, tls: bool, token: bool) -> list[str]:
    """What an operator should hear about listening on ``host`` with these settings."""
    if is_loopback(host):
        return []
    warnings = []
    if not tls:
        warnings.append(f"listening on {host} without TLS: requests, answers and any token cross the network in clear")
    if not token and not tls:
        warnings.append(
            f"listening on {host} without a token or client certificates: anyone who reaches it may call it"
        )
    elif not token:
        warnings.append(f"listening on {host} without --token-file: any client that trusts the certificate may call it")
    return warnings


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class BearerToken(grpc.aio.ServerInterceptor):
    """Lets a call through only with the metadata ``authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        if not token:
            raise SecurityError("an empty token would let everyone in")
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails):
        if details.method in OPEN_METHODS:
            return await continuation(details)
        given = [v for k, v in details.invocation_metadata or () if k == AUTHORIZATION]
        if len(given) == 1:
            value = given[0].encode() if isinstance(given[0], str) else given[0]
            if hmac.compare_digest(value, self._expected):
                return await continuation(details)
        problem = (
            "wrong bearer token" if given else "no bearer token: send the metadata 'authorization: Bearer <token>'"
        )
        return _refusal(await continuation(details), details.method, problem)


def _refusal(handler: grpc.RpcMethodHandler | None, method: str, problem: str) -> grpc.RpcMethodHandler:
    """A handler of the method's own kind (unary or streaming) that ends the call UNAUTHENTICATED."""

    async def refuse(request, context: grpc.aio.ServicerContext) -> None:
        log.info("refused a call to %s from %s: %s", method, context.peer(), problem.split(":")[0])
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)

    # No deserializer: the request of a caller without the token is never parsed.
    if handler is None or not (handler.request_streaming or handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.unary_stream_rpc_method_handler(refuse)
