"""HTTP bodies read under limits, in-process over a fake runtime: compressed bodies inflated within the
limit (413 past it, before the runtime or JSON parser sees a byte), refusals before the body is read
(token, Content-Length, encoding), JSON nesting, slow clients, and refused bodies counted as failures.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from graphgen_server.config import ServerConfig
from graphgen_server.core.api import Inferred, OutputTensor
from graphgen_server.frontends.gate import CallGate
from graphgen_server.frontends.http_body import BodyReader
from graphgen_server.frontends.http_codec import MAX_JSON_DEPTH, nesting_depth
from graphgen_server.frontends.http_listener import runner_options
from graphgen_server.frontends.http_routes import KServeHttp
from tests.server.unit.test_http_routes import TIMINGS, FakeRuntime

LIMIT = 64 << 10
INFER = "/v2/models/m/infer"
REQUEST = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}).encode()


def _runtime() -> FakeRuntime:
    y = np.zeros((1, 2), np.float32)
    return FakeRuntime(Inferred("m", "2", [OutputTensor("y", "FP32", y)], TIMINGS, None))


def _compress(data: bytes, wbits: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


GZIP, ZLIB, RAW = 31, 15, -15
BOMB = _compress(bytes(64 << 20), GZIP)  # 64 KiB on the wire, 64 MiB inflated: a thousand limits


def serve(test, runtime: FakeRuntime | None = None, header_timeout_s: float = 75.0, **settings):
    """Runs ``test(client, runtime)`` against the REST app (limit LIMIT) on aiohttp's test server."""
    runtime = runtime or _runtime()
    config = ServerConfig(repository=".", **{"max_message_bytes": LIMIT, **settings})  # type: ignore[arg-type]

    async def go():
        app = KServeHttp(runtime, CallGate(), config).app()  # type: ignore[arg-type]
        server = TestServer(app)
        await server.start_server(**runner_options(header_timeout_s))  # (TestServer drops its own kwargs)
        async with TestClient(server) as client:
            return await test(client, runtime)

    return asyncio.run(go())


async def _post(client, body: bytes, headers: dict[str, str], path: str = INFER) -> tuple[int, dict]:
    response = await client.post(path, data=body, headers=headers)
    return response.status, await response.json(content_type=None)


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", GZIP), ("deflate", ZLIB), ("deflate", RAW)])
def test_compressed_bodies_are_inflated(encoding, wbits):
    async def test(client, runtime):
        return await _post(client, _compress(REQUEST, wbits), {"Content-Encoding": encoding})

    status, answer = serve(test)
    assert status == 200 and answer["model_name"] == "m"


def test_a_bomb_is_refused_413_once_the_inflated_body_passes_the_limit_and_nothing_parses_it(monkeypatch):
    inflated: list[int] = []
    original = BodyReader._inflate

    def spy(self, raw, encoding):
        try:
            return original(self, raw, encoding)
        finally:
            inflated.append(len(raw))

    monkeypatch.setattr(BodyReader, "_inflate", spy)

    async def test(client, runtime):
        started = time.monotonic()
        answer = await _post(client, BOMB, {"Content-Encoding": "gzip"})
        return answer, time.monotonic() - started, list(runtime.seen)

    (status, answer), seconds, seen = serve(test)
    assert status == 413 and f"gzip body inflated is over the server's limit of {LIMIT} bytes" in answer["error"]
    assert inflated == [len(BOMB)] and seconds < 5
    assert not [call for call in seen if call[0] in ("infer", "refused")]  # never parsed, never run


def test_a_bomb_is_refused_having_held_a_few_pieces_not_the_limit(monkeypatch):
    import tracemalloc

    from graphgen_server.frontends import http_body
    from graphgen_server.frontends.http_body import BodyRefused

    monkeypatch.setattr(http_body, "PIECE", PIECE := 1 << 20)  # (8 MiB served: a 32 MiB limit would not show it)
    reader = BodyReader(limit=32 << 20, timeout_s=10)
    tracemalloc.start()
    try:
        with pytest.raises(BodyRefused) as refused:
            reader._inflate(BOMB, "gzip")  # 64 MiB of zeros: twice the limit
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        reader.close()
    assert refused.value.status == 413
    assert peak < 4 * PIECE, f"inflating a bomb held {peak / 2**20:.1f} MiB"
    honest = _compress(bytes(20 << 20), GZIP)
    assert reader._inflate(honest, "gzip") == bytes(20 << 20)  # within the limit: kept whole


def test_without_the_token_a_bomb_is_refused_401_and_never_inflated(monkeypatch):
    monkeypatch.setattr(BodyReader, "_inflate", lambda *args: pytest.fail("a body inflated before the token check"))

    async def test(client, runtime):
        return await _post(client, BOMB, {"Content-Encoding": "gzip", "Authorization": "Bearer wrong"})

    status, answer = serve(test, token="secret")
    assert status == 401 and answer["error"] == "wrong bearer token"


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (b"x" * (LIMIT + 1), {}, 413, f"Content-Length {LIMIT + 1} is over the server's limit"),
        (REQUEST, {"Content-Encoding": "br"}, 415, "Content-Encoding 'br' is not supported (gzip, deflate or none)"),
        (_compress(REQUEST, GZIP)[:-9], {"Content-Encoding": "gzip"}, 400, "ends before its compressed stream does"),
        (_compress(REQUEST, GZIP) + b"tail", {"Content-Encoding": "gzip"}, 400, "4 bytes follow the end of the gzip"),
        (REQUEST, {"Content-Encoding": "gzip"}, 400, "the body is not valid gzip data"),
    ],
)
def test_bodies_that_cannot_be_had_say_why(body, headers, status, words):
    async def test(client, runtime):
        return await _post(client, body, headers)

    got, answer = serve(test)
    assert got == status and words in answer["error"]


def test_an_unknown_model_is_answered_before_its_body_is_read(monkeypatch):
    monkeypatch.setattr(BodyReader, "read", lambda *args: pytest.fail("the body of a call to no model was read"))

    async def test(client, runtime):
        return await _post(client, REQUEST, {}, "/v2/models/nothing/infer")

    status, answer = serve(test)
    assert status == 404 and "'nothing' is not in the repository" in answer["error"]


def test_deep_json_is_a_400_naming_the_limit_on_every_route():
    deep = b"[" * 200_000 + b"]" * 200_000
    nested = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [[[[1, 2, 3]]]]}]})

    async def test(client, runtime):
        return [
            await _post(client, deep, {}),
            await _post(client, b'{"inputs": ' + deep + b"}", {}),
            await _post(client, deep, {}, "/v2/repository/index"),
            await _post(client, nested.encode(), {}),  # a nested tensor is no deeper than its rank
        ]

    *refused, (status, _) = serve(test, max_message_bytes=1 << 20)
    for got, answer in refused:
        assert got == 400 and f"the server takes at most {MAX_JSON_DEPTH}" in answer["error"]
    assert "JSON nested 200000 levels deep" in refused[0][1]["error"]
    assert status == 200


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"", 0),
        (b"3", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": [[2]]}]}', 5),
        (b'{"a": "[[[[{{{{"}', 1),  # brackets inside strings are text
        (b'["\\"[[", [1]]', 2),  # an escaped quote does not end the string
        (b'["\\\\", [[1]]]', 3),  # an escaped backslash does not escape the quote after it
        (b'["\\u005b", [1]]', 2),
        (b"[" * 1000 + b"]" * 1000, 1000),
    ],
)
def test_nesting_depth(text, depth):
    assert nesting_depth(text) == depth


def test_a_body_that_does_not_decode_counts_as_a_failure_of_its_model():
    bad = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2]}]}).encode()

    async def test(client, runtime):
        return await _post(client, bad, {}, "/v2/models/m/versions/1/infer"), runtime.seen

    (status, answer), seen = serve(test)
    assert status == 400 and "inputs[0].data" in answer["error"]
    assert [call for call in seen if call[0] in ("refused", "infer")] == [("refused", "m", "1", "InvalidArgument")]


async def _raw(client, data: bytes, wait_s: float) -> tuple[bytes, float]:
    """Writes ``data`` on a connection of its own and reads until the server closes it (or wait_s)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    started = time.monotonic()
    writer.write(data)
    received = b""
    try:
        async with asyncio.timeout(wait_s):
            while chunk := await reader.read(1 << 16):
                received += chunk
    except TimeoutError:
        received += b"<still open>"
    writer.close()
    return received, time.monotonic() - started


def test_a_slow_body_is_answered_408_and_its_connection_closed():
    async def test(client, runtime):
        head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
        return await _raw(client, head + REQUEST[:10], wait_s=10)

    received, seconds = serve(test, http_body_timeout_s=0.5)
    assert received.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5s (10 bytes received" in received
    assert not received.endswith(b"<still open>") and seconds < 5


def test_a_header_not_complete_within_the_header_timeout_loses_its_connection():
    async def test(client, runtime):
        partial = await _raw(client, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n", wait_s=10)
        silent = await _raw(client, b"", wait_s=10)
        prompt = await _raw(client, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n", wait_s=0.3)
        return partial, silent, prompt

    (partial, partial_s), (silent, silent_s), (prompt, _) = serve(test, header_timeout_s=0.5)
    assert (partial, silent) == (b"", b"") and partial_s < 5 and silent_s < 5
    assert prompt.startswith(b"HTTP/1.1 200")  # a prompt client is answered, and kept (keep-alive)
    assert prompt.endswith(b"<still open>")
