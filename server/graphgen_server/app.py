"""The gRPC server: services, health, reflection, message limits, and a graceful stop.

On SIGTERM or SIGINT the health service turns NOT_SERVING and calls are still answered for
``pre_stop_s`` (load balancers drop the server meanwhile); then new calls are refused with
UNAVAILABLE, calls already accepted (queued in a batcher or running) get ``grace_s`` to finish,
the connections are closed and the process exits 0. No call ends CANCELLED (see
:meth:`GraphgenServer.stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from graphgen_protos import classifier_pb2, kserve_v2_pb2
from graphgen_server.config import ServerConfig
from graphgen_server.core.control import FrontendControl
from graphgen_server.core.model_control import ModelControl
from graphgen_server.core.runtime import LocalRuntime
from graphgen_server.core.shared_memory import SharedMemory
from graphgen_server.frontends.disconnect import disconnect_port
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.grpc_classify import ClassifierServicer
from graphgen_server.frontends.grpc_kserve import KServeServicer
from graphgen_server.frontends.grpc_wire import add_servicer
from graphgen_server.frontends.http_listener import BindError, HttpListener
from graphgen_server.frontends.http_routes import KServeHttp
from graphgen_server.frontends.metrics import metrics_app
from graphgen_server.frontends.security import (
    BearerToken,
    exposure_warnings,
    is_loopback,
    server_credentials,
    ssl_context,
)

log = logging.getLogger("graphgen_server")

CLASSIFIER_SERVICE = classifier_pb2.DESCRIPTOR.services_by_name["Classifier"]
KSERVE_SERVICE = kserve_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
CLASSIFIER, KSERVE = CLASSIFIER_SERVICE.full_name, KSERVE_SERVICE.full_name
SERVICES = (CLASSIFIER, KSERVE)
# The health service's name for "this process works" (Kubernetes' liveness probe asks it): SERVING
# from start to SIGTERM whether or not a model is ready, where "" and the services above mean "a
# model serves" (readiness). Triton's ServerLive and ServerReady make the same distinction.
LIVE = "live"
LINGER_S = 0.5
HTTP, METRICS = "KServe v2 HTTP/REST", "Prometheus metrics (/metrics)"  # (the log names the listeners so)
GRPC_COMPRESS_NONE = 0  # grpc_compression_algorithm's identity (grpc/impl/compression_types.h)


class Health(health.aio.HealthServicer):
    """grpcio's health service, whose answer for an unknown service says which ones it knows."""

    async def Check(self, request: health_pb2.HealthCheckRequest, context):
        if request.service not in self._server_status:
            known = ", ".join(repr(s) for s in sorted(self._server_status))
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no health status for service {request.service!r} (services: {known})"
            )
        return await super().Check(request, context)


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    """The gRPC server's channel arguments: message limits, one server per port, connection age."""
    limit = config.max_message_bytes
    options = [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        # A second server on the same port must fail, not share it; this server's own front-end
        # processes share it (the supervisor probed the port without SO_REUSEPORT first).
        ("grpc.so_reuseport", 1 if config.frontends > 1 else 0),
    ]
    if not config.grpc_compression:
        # gRPC's C core inflates a compressed message whole before any limit or handler sees it
        # (measured: four 2 MB gzip messages took the process to 5.2 GB, unanswered after 60 s):
        # only identity is enabled, and a compressed request ends UNIMPLEMENTED ("Compression
        # algorithm 'gzip' is disabled.") before its message is read.
        options.append(("grpc.compression_enabled_algorithms_bitset", 1 << GRPC_COMPRESS_NONE))
    if config.max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", round(config.max_connection_age_s * 1000)))
        if config.max_connection_age_grace_s is not None:
            options.append(("grpc.max_connection_age_grace_ms", round(config.max_connection_age_grace_s * 1000)))
    return options


class GraphgenServer:
    """One process serving every protocol: the whole server, or one of ``--frontends N`` replicas.

    ``channel``: the server-wide control channel (a :class:`~graphgen_server.core.control.FrontendControl`
    when a supervising process runs several front-ends; this process alone otherwise).
    """

    def __init__(self, config: ServerConfig, channel: FrontendControl | None = None) -> None:
        self.config = config
        self.channel = channel
        self.runtime = LocalRuntime(config, channel)
        self.health = Health()
        self.gate = CallGate()
        self.hurry = asyncio.Event()  # set by a second SIGTERM/SIGINT: the pre-stop delay ends at once
        self.control = ModelControl(self.runtime, self.publish_health) if config.model_control else None
        self.shared_memory = SharedMemory(self.runtime.channel, config.allow_client_shm)  # (server-wide)
        self.port = 0
        self.http: HttpListener | None = None
        self.draining = False  # from SIGTERM on: HTTP readiness says no, as the health service does
        self.metrics: HttpListener | None = None
        self.credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        self.server = grpc.aio.server(
            interceptors=[BearerToken(config.token)] if config.token else None, options=grpc_options(config)
        )

    async def start(self) -> None:
        self._bind()  # every port first: one in use stops the server before any model loads
        self.runtime.load()
        add_servicer(self.server, ClassifierServicer(self.runtime, self.gate), CLASSIFIER_SERVICE)
        kserve = KServeServicer(self.runtime, self.gate, self.control, self.shared_memory)
        add_servicer(self.server, kserve, KSERVE_SERVICE)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        if self.channel is not None:
            await self.channel.join()  # model loads and unloads made meanwhile are applied here first
        await self.server.start()
        await self.health.set(LIVE, health_pb2.HealthCheckResponse.SERVING)
        await self.publish_health()
        if self.http is not None:
            http = KServeHttp(
                self.runtime, self.gate, self.config, self.control, lambda: self.draining, self.shared_memory
            )
            await self.http.start(http.app())
        if self.metrics is not None:
            await self.metrics.start(metrics_app(self.runtime))
        ports = Ports(self.port, self.http.port if self.http else None, self.metrics.port if self.metrics else None)
        ready, models = sum(m.ready for m in self.runtime.all()), len(self.runtime.all())
        if self.channel is None:
            announce(self.config, ports, ready, models)
        else:  # the supervising process announces the server once every front-end is up
            await self.channel.notify("ready", (ready, models))

    def _bind(self) -> None:
        try:
            if self.credentials is None:
                self.port = self.server.add_insecure_port(self.config.address)
            else:
                self.port = self.server.add_secure_port(self.config.address, self.credentials)
        except RuntimeError as error:  # grpc raises RuntimeError when it cannot bind
            raise BindError(f"cannot listen on {self.config.address}: {error}") from None
        if self.port == 0:
            raise BindError(f"cannot listen on {self.config.address} (in use, or not an address of this machine)")
        tls, shared = ssl_context(self.config), self.config.frontends > 1
        if self.config.http_port is not None:
            self.http = HttpListener(
                HTTP, self.config.host, self.config.http_port, tls, shared, self.config.http_header_timeout_s
            )
        if self.config.metrics_port is not None:
            self.metrics = HttpListener(
                METRICS, self.config.host, self.config.metrics_port, tls, shared, self.config.http_header_timeout_s
            )

    async def publish_health(self) -> None:
        """SERVING while at least one model is ready (a broken model is reported per model)."""
        status = health_pb2.HealthCheckResponse.SERVING
        if not any(m.ready for m in self.runtime.all()):
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", *SERVICES):
            await self.health.set(service, status)

    async def stop(self) -> None:
        """The stop a load balancer needs: NOT_SERVING while still answering, drain, disconnect.

        1. Health turns NOT_SERVING (watchers are told at once) and calls are still answered for
           ``pre_stop_s``: load balancers, Kubernetes endpoints and clients checking health move
           their traffic elsewhere meanwhile.
        2. The gate closes: new calls are refused UNAVAILABLE, those inside get ``grace_s``.
        3. The sockets are closed before gRPC's stop (see :mod:`graphgen_server.frontends.disconnect`), so
           a call still in transit ends UNAVAILABLE, never CANCELLED.
        """
        self.draining = True
        await self.health.enter_graceful_shutdown()  # every service NOT_SERVING, watchers told
        if self.config.pre_stop_s > 0:
            log.info(
                "NOT_SERVING; still answering for %.1fs while load balancers drop this server", self.config.pre_stop_s
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hurry.wait(), self.config.pre_stop_s)
                log.info("second signal: the drain starts now")
        in_flight = self.gate.in_flight
        log.info("shutting down: refusing new calls, %.1fs for the %d in flight", self.config.grace_s, in_flight)
        drained = await self.gate.close(self.config.grace_s)
        if drained:
            # The answers to the last calls leave now; calls arriving meanwhile are refused.
            await asyncio.sleep(min(LINGER_S, self.config.grace_s))
        else:
            log.warning("grace period over: cancelling %d calls still in flight", self.gate.in_flight)
        # The listener closes under gRPC's poller, which may log "Closing acceptor. Failed accept4:
        # Invalid argument" (an error line of gRPC's, expected: README, "Stopping without failed calls").
        log.info("closing the gRPC port and its connections before gRPC's stop (new calls go elsewhere)")
        disconnect_port(self.port)
        await self.server.stop(0)
        for listener in (self.http, self.metrics):
            if listener is not None:
                await listener.stop()
        if self.control is not None:
            self.control.close()
        await self.runtime.close()
        self.shared_memory.close()
        if self.channel is not None:
            await self.channel.close()
        log.info("stopped")


@dataclass(frozen=True)
class Ports:
    grpc: int
    http: int | None = None  # None: not listening
    metrics: int | None = None


def announce(config: ServerConfig, ports: Ports, ready: int, models: int) -> None:
    """Say once that the server listens, where, and how exposed it is; print the chosen ports on stdout."""
    for what, port in ((HTTP, ports.http), (METRICS, ports.metrics)):
        if port:
            log.info("%s on %s", what, config.address_of(port))
    tls = "mutual TLS" if config.tls_client_ca else "TLS" if config.tls_cert else "plaintext"
    processes = f"; {config.frontends} front-end processes" if config.frontends > 1 else ""
    log.info(
        "graphgen-server listening on %s:%d (%s%s; %d of %d models ready%s)",
        config.host,
        ports.grpc,
        tls,
        ", bearer token" if config.token else "",
        ready,
        models,
        processes,
    )
    # The chosen ports (--port 0, auto), one per line on stdout, for scripts to read.
    chosen = {"grpc_port": ports.grpc, "http_port": ports.http, "metrics_port": ports.metrics}
    print("\n".join(f"{key}={value}" for key, value in chosen.items() if value), flush=True)
    for warning in exposure_warnings(config.host, config.tls_cert is not None, bool(config.token)):
        log.warning("%s", warning)
    if ports.metrics and config.token and not is_loopback(config.host):
        log.warning(
            "metrics on %s need no token (counts and model names, no request data): limit who reaches the port",
            config.address_of(ports.metrics),
        )


def run_loop(main: Coroutine[Any, Any, int], event_loop: str = "auto") -> int:
    """Run ``main`` to its end on uvloop (``auto``: where it is installed) or on asyncio's own loop.

    uvloop (libuv) spends less CPU per request than asyncio's selector loop: measured here ~10-15%
    less server CPU per ModelInfer at saturation (bench/dataplane.py; gRPC's own work runs in the
    loop's callbacks), the same answers.
    """
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise
        else:
            return uvloop.run(main)
    return asyncio.run(main)


async def serve(
    config: ServerConfig,
    on_started: Callable[[GraphgenServer], None] | None = None,
    channel: FrontendControl | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or, as a front-end process, until its supervisor is gone); returns
    the exit status (0 after a graceful stop)."""
    server = GraphgenServer(config, channel)
    stop = asyncio.Event()
    if channel is not None:
        channel.on_lost = stop.set
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    # What start-up made (modules, models) lives as long as the server: out of the garbage
    # collector's way, so that its collections walk what requests make, not all of it.
    gc.collect()
    gc.freeze()
    if on_started is not None:
        on_started(server)
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.hurry.set)
    await server.stop()
    return 0
