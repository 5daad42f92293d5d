"""KServe v2 HTTP/REST (Triton's endpoints) on aiohttp, in the gRPC server's event loop.

Each endpoint turns its URL and body into the runtime's Python types (:mod:`graphgen_server.frontends.http_codec`),
calls the runtime, and writes the answer as Triton's REST API does. What the gRPC servicer answers
too (metadata, statistics, parameters' rules) comes from :mod:`graphgen_server.frontends.kserve_common`, and
both pass the same shutdown gate: one behaviour for both protocols. Failures are answered
``{"error": message}`` with the HTTP status :mod:`graphgen_server.frontends.status` chooses (``HTTP_STATUS``).

A body is read only once the request may proceed (token, shutdown gate, the model ready), within
the limits of :mod:`graphgen_server.frontends.http_body` (size on the wire and inflated, time,
encodings); a request that does not decode counts in its model's failures, as one the core refused.

"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from graphgen_server.config import ServerConfig
from graphgen_server.core.api import Runtime
from graphgen_server.core.control import LocalControl
from graphgen_server.core.errors import InvalidArgument, ModelUnavailable, ServingError, Unsupported
from graphgen_server.core.model_control import ModelControl
from graphgen_server.core.shared_memory import SharedMemory
from graphgen_server.frontends import http_codec, kserve_common, kserve_shm
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.http_body import BodyReader, BodyRefused
from graphgen_server.frontends.status import clamp, http_status_of

log = logging.getLogger("graphgen_server")

MODEL = r"/v2/models/{model:[^/]+}"
VERSIONED = r"/v2/models/{model:[^/]+}/versions/{version:[^/]+}"  # (a malformed version: 400, as Triton)
PARSE_ON_LOOP_BYTES = 64 << 10  # larger infer bodies are parsed on a thread
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})  # probes, as gRPC's health service
SYSTEM_SHM, CUDA_SHM = "/v2/systemsharedmemory", "/v2/cudasharedmemory"  # [/region/{region}]/status|register|...
REGION = "/region/{region:[^/]+}"
# Triton endpoints graphgen does not serve, answered 501 with the reason (not a bare 404).
REFUSED = {
    "/v2/trace/setting": kserve_common.TRACE_REFUSED,
    MODEL + "/trace/setting": kserve_common.TRACE_REFUSED,
    "/v2/logging": kserve_common.LOGGING_REFUSED,
    MODEL + "/generate{tail:(_stream)?}": kserve_common.GENERATE_REFUSED,
    VERSIONED + "/generate{tail:(_stream)?}": kserve_common.GENERATE_REFUSED,
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": clamp(message)}, status=status)


@web.middleware
async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as ``{"error": ...}`` with its status (aiohttp's own 404/405/413 included)."""
    try:
        return await handler(request)
    except BodyRefused as error:
        log.info("refused the body of HTTP %s %s from %s: %s", request.method, request.path, request.remote, error)
        response = error_response(error.status, error.message)
        response.force_close()  # (see BodyRefused: the connection cannot carry another request)
        if error.hang_up:
            await response.prepare(request)
            await response.write_eof()
            request.protocol.force_close()  # written first: the transport sends it, then closes
        return response
    except web.HTTPException as error:
        if error.status < 400:
            raise
        if error.status == 404:
            return error_response(
                404, f"no endpoint {request.path} (KServe v2 paths: /v2, /v2/health/..., /v2/models/...)"
            )
        return error_response(error.status, f"{request.method} {request.path}: {error.reason}")
    except Exception as error:  # the request's body or URL, or the runtime's answer
        status, message = http_status_of(error)
        if status == 500:
            log.exception("HTTP %s %s failed", request.method, request.path)
        return error_response(status, message)


def bearer_token(token: str, open_paths: Iterable[str] = OPEN_PATHS) -> Any:
    """A middleware letting requests through only with ``Authorization: Bearer <token>``."""
    expected, open_paths = f"Bearer {token}".encode(), frozenset(open_paths)

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in open_paths:
            given = request.headers.getall("Authorization", [])
            if len(given) != 1 or not hmac.compare_digest(given[0].encode(), expected):
                problem = "wrong bearer token" if given else "no bearer token: send 'Authorization: Bearer <token>'"
                log.info("refused HTTP %s %s from %s: %s", request.method, request.path, request.remote, problem)
                response = error_response(401, problem)
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        return await handler(request)

    return check


class KServeHttp:
    """Triton's REST endpoints over the :class:`~graphgen_server.core.api.Runtime`."""

    def __init__(
        self,
        runtime: Runtime,
        gate: CallGate,
        config: ServerConfig,
        control: ModelControl | None = None,
        draining: Callable[[], bool] = lambda: False,
        shared_memory: SharedMemory | None = None,
    ) -> None:
        self.runtime = runtime
        self.gate = gate  # the gRPC servicers' gate: a shutdown refuses both protocols alike
        self.config = config
        self.control = control  # None: load and unload are refused
        self.draining = draining  # true from a SIGTERM on: readiness probes must move traffic away
        # The gRPC servicer's regions (None: no region can be registered, status lists none).
        self.shared_memory = shared_memory or SharedMemory(LocalControl())
        self.bodies = BodyReader(config.max_message_bytes, config.http_body_timeout_s)

    def app(self) -> web.Application:
        middlewares = [answer_errors, *([bearer_token(self.config.token)] if self.config.token else [])]
        app = web.Application(middlewares=middlewares, client_max_size=self.config.max_message_bytes)
        app.on_cleanup.append(self._close)
        get, post = web.get, web.post
        routes = [
            get("/v2", self.server_metadata),
            get("/v2/health/live", self.live),
            get("/v2/health/ready", self.ready),
            get("/v2/models/stats", self.statistics),
            post("/v2/repository/index", self.repository_index),
            post("/v2/repository/models/{model:[^/]+}/load", self.load),
            post("/v2/repository/models/{model:[^/]+}/unload", self.unload),
        ]
        for prefix in (MODEL, VERSIONED):
            routes += [
                get(prefix, self.model_metadata),
                get(prefix + "/ready", self.model_ready),
                get(prefix + "/config", self.model_config),
                get(prefix + "/stats", self.statistics),
                post(prefix + "/infer", self.infer),
            ]
        for prefix in ("", REGION):  # Triton's /v2/{system,cuda}sharedmemory[/region/{region}]/<action>
            routes += [
                get(SYSTEM_SHM + prefix + "/status", self.system_shm_status),
                post(SYSTEM_SHM + prefix + "/register", self.system_shm_register),
                post(SYSTEM_SHM + prefix + "/unregister", self.system_shm_unregister),
                get(CUDA_SHM + prefix + "/status", self.cuda_shm_status),
                post(CUDA_SHM + prefix + "/register", self.cuda_shm_register),
                post(CUDA_SHM + prefix + "/unregister", self.cuda_shm_unregister),
            ]
        for path, why in REFUSED.items():
            routes.append(web.route("*", path, _refuse(why)))
        app.add_routes(routes)
        return app

    async def server_metadata(self, request: web.Request) -> web.Response:
        async with self.gate.call():
            return web.json_response(kserve_common.server_metadata(self.control))

    async def live(self, request: web.Request) -> web.Response:
        async with self.gate.call():
            return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        async with self.gate.call():
            ready = kserve_common.server_ready(self.runtime, self.gate) and not self.draining()
        return web.Response(status=200 if ready else 400)

    async def model_ready(self, request: web.Request) -> web.Response:
        async with self.gate.call():
            ready = kserve_common.model_ready(self.runtime, *_model(request))
        return web.Response(status=200) if ready else error_response(400, "Model version not ready")

    async def model_metadata(self, request: web.Request) -> web.Response:
        async with self.gate.call():
            return web.json_response(kserve_common.model_metadata(self.runtime, *_model(request)))

    async def model_config(self, request: web.Request) -> web.Response:
        async with self.gate.call():
            config = self.runtime.ready(*_model(request)).served().config
            return web.json_response(http_codec.message_json(config))  # the config itself, as Triton's

    async def statistics(self, request: web.Request) -> web.Response:
        async with self.gate.call():
            return web.json_response(
                {"model_stats": await kserve_common.ready_statistics(self.runtime, *_model(request))}
            )

    async def _close(self, app: web.Application) -> None:
        self.bodies.close()

    async def repository_index(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidArgument("ready", "must be true or false")
        async with self.gate.call():
            return web.json_response(kserve_common.repository_index(self.runtime, ready))  # Triton answers a list

    async def load(self, request: web.Request) -> web.Response:
        name, parameters = await self._control_request(request)
        async with self.gate.call():
            control = kserve_common.model_control(self.control, "", parameters, {kserve_common.CONFIG_PARAMETER})
            await control.load(name, kserve_common.config_override(parameters))
        return web.Response(status=200)

    async def unload(self, request: web.Request) -> web.Response:
        name, parameters = await self._control_request(request)
        async with self.gate.call():
            # tritonclient always sends unload_dependents: there are no ensembles here, so no dependents.
            await kserve_common.model_control(self.control, "", parameters, {"unload_dependents"}).unload(name)
        return web.Response(status=200)

    async def _control_request(self, request: web.Request) -> tuple[str, dict]:
        body = await self._body(request)
        if not isinstance(body.get("parameters", {}), dict):
            raise InvalidArgument("parameters", "must be a JSON object")
        # (a repository parameter has no double: as ModelRepositoryParameter)
        parameters = http_codec.parameters(body.get("parameters", {}), "parameters", floats=False)
        return request.match_info["model"], parameters

    async def infer(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        self._admit()
        self.bodies.refuse_early(request)
        self.runtime.ready(name, version)  # an unknown or unready model: answered before its body is read
        body = await self.bodies.read(request)
        header_length = request.headers.get(http_codec.HEADER_LENGTH)
        try:
            if len(body) > PARSE_ON_LOOP_BYTES:
                # Parsing megabytes of JSON takes ~100 ms: on a thread, the loop keeps serving meanwhile.
                parse = functools.partial(http_codec.infer_request, body, header_length, self.shared_memory)
                call = await asyncio.get_running_loop().run_in_executor(None, parse)
            else:
                call = http_codec.infer_request(body, header_length, self.shared_memory)
            in_shared_memory = kserve_shm.output_views(self.shared_memory, call.regions)
        except ServingError as error:
            self.runtime.refused(name, version, error)  # counted as the core counts the requests it refuses
            raise
        async with self.gate.call():
            inferred = await self.runtime.infer(
                name, version, inputs=call.inputs, outputs=call.outputs, profile=call.profile
            )
            written = kserve_shm.write_outputs(inferred.outputs, in_shared_memory)
        content, json_length = http_codec.infer_response(inferred, call.id, call.binary, written)
        binary_follows = json_length is not None
        response = web.Response(
            body=content, content_type="application/octet-stream" if binary_follows else "application/json"
        )
        if binary_follows:
            response.headers[http_codec.HEADER_LENGTH] = str(json_length)
        if any(e in request.headers.get("Accept-Encoding", "") for e in ("gzip", "deflate")):
            response.enable_compression()  # tritonclient's response_compression_algorithm
        return response

    def _admit(self) -> None:
        """Refuses a request before its body is read while the server shuts down (as the gate would after)."""
        if self.gate.closed:
            raise ModelUnavailable("the server is shutting down; retry on another replica")

    async def _body(self, request: web.Request) -> dict:
        """A request's JSON object body ({} when empty), read once the request may proceed."""
        self._admit()
        text = await self.bodies.read(request)
        if not text.strip():
            return {}
        document = http_codec.parse_json(text, "request")
        if not isinstance(document, dict):
            raise InvalidArgument("request", "must be a JSON object")
        return document

    # -- Triton's shared-memory extensions ------------------------------------------------
    async def system_shm_status(self, request: web.Request) -> web.Response:
        async with self.gate.call():
            regions = kserve_shm.system_status(self.shared_memory, request.match_info.get("region", ""))
            return web.json_response(regions)

    async def system_shm_register(self, request: web.Request) -> web.Response:
        self.shared_memory.check_allowed()  # (Triton refuses before it reads the body)
        body = await self._body(request)
        async with self.gate.call():
            name = request.match_info.get("region", "")
            if not name:
                raise InvalidArgument("region", "a region name is needed to register a system shared-memory region")
            for required in ("key", "byte_size"):
                if required not in body:
                    raise InvalidArgument(required, f"the register request has no '{required}' field")
            key, offset, byte_size = body["key"], body.get("offset", 0), body["byte_size"]
            if not isinstance(key, str):
                raise InvalidArgument("key", f"must be a string, got {key!r}")
            for field, value in (("offset", offset), ("byte_size", byte_size)):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise InvalidArgument(field, f"must be a byte count (an integer, 0 or more), got {value!r}")
            await self.shared_memory.register(name, key, offset, byte_size)
        return web.Response(status=200)

    async def system_shm_unregister(self, request: web.Request) -> web.Response:
        async with self.gate.call():
            await self.shared_memory.unregister(request.match_info.get("region", ""))
        return web.Response(status=200)

    async def cuda_shm_status(self, request: web.Request) -> web.Response:
        async with self.gate.call():
            return web.json_response(kserve_shm.cuda_status(self.shared_memory, request.match_info.get("region", "")))

    async def cuda_shm_register(self, request: web.Request) -> web.Response:
        raise Unsupported(kserve_shm.cuda_refused(request.match_info.get("region", "")))

    async def cuda_shm_unregister(self, request: web.Request) -> web.Response:
        async with self.gate.call():
            kserve_shm.cuda_unregister(self.shared_memory)
        return web.Response(status=200)


def _refuse(why: str) -> Handler:
    async def refuse(request: web.Request) -> web.Response:
        return error_response(501, why)

    return refuse


def _model(request: web.Request) -> tuple[str, str]:
    return request.match_info.get("model", ""), request.match_info.get("version", "")
