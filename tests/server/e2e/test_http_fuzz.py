"""The HTTP/REST surface fuzzed: methods, paths, headers, encodings and bodies (valid inference requests
with one part replaced, random JSON shapes, JSON nested around the depth limit, the binary extension
with lying lengths, random bytes; gzip/deflate that is or is not what it claims) sent byte for byte on
raw connections. Every request is answered, within seconds, never 500; between them valid requests
are answered exactly as the model computes them.

Counts by status are printed at the end (``pytest -s``). Hypothesis runs derandomized (the same cases
on every run); set GRAPHGEN_FUZZ_SEED to explore others.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.hostile import http_request
from tests.support.server import ServerProcess, add_tiny_model

EXAMPLES = 1500
ANSWER_WITHIN_S = 10.0
MAX_MESSAGE = 1 << 20  # --max-message-mib 1
ARGS = ["--max-message-mib", "1", "--http-body-timeout", "2", "--http-header-timeout", "3", "--max-queue", "64"]
SETTINGS = dict(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("GRAPHGEN_FUZZ_SEED") is None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
TALLY: Counter[int] = Counter()
VALID: Counter[str] = Counter()
SHAPE = (1, 3, 32, 32)
INPUT = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    add_tiny_model(repository)
    with ServerProcess(repository, ARGS) as process:
        yield process
    counts = ", ".join(f"{status} {count}" for status, count in sorted(TALLY.items()))
    print(
        f"\nHTTP fuzz: {sum(TALLY.values())} requests: {counts}; {VALID['correct']} valid requests interleaved, all correct"
    )


@pytest.fixture(scope="module")
def expected(server, ort_cpu):
    session = ort_cpu(server.repository / "tiny" / "1" / "model.onnx")
    return session.run(None, {"input": INPUT})[0]


def valid_request() -> dict:
    return {
        "id": "fuzz",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(SHAPE), "data": INPUT.ravel().tolist()}],
        "outputs": [{"name": "logits"}],
    }


JSON_LEAVES = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
JSON = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
FIELDS = ["id", "inputs", "outputs", "parameters", "name", "datatype", "shape", "data", "binary_data_size"]


@st.composite
def mutated_request(draw) -> bytes:
    """A valid inference request with one part (at any depth) replaced by arbitrary JSON."""
    document = valid_request()
    target: dict = document
    path = draw(st.sampled_from([(), ("inputs", 0), ("outputs", 0), ("inputs", 0, "parameters")]))
    for key in path:
        target = target.setdefault(key, {}) if isinstance(key, str) else target[key]
    key = draw(st.sampled_from(FIELDS))
    if draw(st.booleans()):
        target[key] = draw(JSON)
    else:
        target.pop(key, None)
    return json.dumps(document).encode()


@st.composite
def nested(draw) -> bytes:
    depth = draw(st.integers(55, 75))  # around the 64-level limit
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    inner = (opener * depth + "1" + closer * depth).encode()
    return b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": ' + inner + b"}]}"


@st.composite
def binary_extension(draw) -> tuple[bytes, dict[str, str]]:
    claimed = draw(st.integers(-5, 20000))
    datatype = draw(st.sampled_from(["FP32", "FP16", "BYTES", "UINT8"]))
    tensor = {"name": "input", "datatype": datatype, "shape": list(SHAPE), "parameters": {"binary_data_size": claimed}}
    header = json.dumps({"inputs": [tensor]}).encode()
    data = draw(st.binary(max_size=13000))
    length = draw(st.sampled_from([str(len(header)), str(len(header) + 3), "0", "-1", "x", str(len(header) * 9)]))
    return header + data, {"Inference-Header-Content-Length": length}


PATHS = [
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/tiny",
    "/v2/models/tiny/ready",
    "/v2/models/tiny/config",
    "/v2/models/tiny/stats",
    "/v2/models/tiny/infer",
    "/v2/models/tiny/versions/1/infer",
    "/v2/models/tiny/versions/7/infer",
    "/v2/models/nothing/infer",
    "/v2/models/stats",
    "/v2/repository/index",
    "/v2/repository/models/tiny/load",
    "/v2/systemsharedmemory/status",
    "/v2/logging",
    "/metrics",
]
RANDOM_PATH = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=300).map(
    lambda t: "/" + t
)
ENCODINGS = ["", "gzip", "deflate", "identity", "br", "gzip, deflate", "x-unknown", "GZIP"]


@st.composite
def http_case(draw) -> tuple[str, str, bytes, dict[str, str]]:
    if draw(st.integers(0, 9)) < 6:  # mostly inference, where bodies are read
        method, path = "POST", draw(st.sampled_from(PATHS[7:10]))
    else:
        method = draw(st.sampled_from(["GET", "POST", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]))
        path = draw(st.sampled_from(PATHS) | RANDOM_PATH)
    headers: dict[str, str] = {}
    kind = draw(st.sampled_from(["mutated", "json", "nested", "binary", "bytes", "empty", "inflating"]))
    if kind == "mutated":
        body = draw(mutated_request())
    elif kind == "json":
        body = json.dumps(draw(JSON)).encode()
    elif kind == "nested":
        body = draw(nested())
    elif kind == "binary":
        body, headers = draw(binary_extension())
    elif kind == "bytes":
        body = draw(st.binary(max_size=3000))
    elif kind == "inflating":  # JSON's start, then zeros inflating to around the limit
        size = draw(st.sampled_from([MAX_MESSAGE // 2, MAX_MESSAGE - 1, MAX_MESSAGE + 1, 3 * MAX_MESSAGE]))
        body = b'{"inputs": [' + bytes(size)
    else:
        body = b""
    encoding = draw(st.sampled_from(ENCODINGS[:3] if kind == "inflating" else ENCODINGS))
    if kind == "inflating" and not encoding:
        body = body[: MAX_MESSAGE + 2]  # (sent as it is: over the limit by a byte, or not)
    if encoding:
        headers["Content-Encoding"] = encoding
        honest = kind == "inflating" or draw(st.booleans())
        if honest and encoding.lower() == "gzip":
            body = gzip.compress(body)
        elif honest and encoding == "deflate":
            body = zlib.compress(body)
    if draw(st.booleans()):
        headers["Content-Type"] = draw(
            st.sampled_from(["application/json", "application/octet-stream", "text/plain", "x"])
        )
    if draw(st.integers(0, 9)) == 0:
        headers["Authorization"] = draw(st.sampled_from(["Bearer x", "Basic eA==", ""]))
    if draw(st.integers(0, 9)) == 0:
        headers["Accept-Encoding"] = draw(st.sampled_from(["gzip", "deflate", "br", "*"]))
    if draw(st.integers(0, 19)) == 0 and body:
        headers["Content-Length"] = str(draw(st.integers(0, len(body) - 1)))  # a shorter length: the rest is junk
    return method, path, body, headers


def _check_valid(server, expected) -> None:
    answer = http_request(server.http_port, "POST", "/v2/models/tiny/infer", json.dumps(valid_request()).encode())
    assert answer.status == 200, answer
    logits = np.asarray(json.loads(answer.body)["outputs"][0]["data"], np.float32).reshape(expected.shape)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    VALID["correct"] += 1


@settings(**SETTINGS)
@given(case=http_case(), then_valid=st.integers(0, 7))
def test_every_http_request_is_answered_promptly_and_never_500(server, expected, case, then_valid):
    method, path, body, headers = case
    answer = http_request(server.http_port, method, path, body, headers, timeout=ANSWER_WITHIN_S)
    TALLY[answer.status] += 1
    assert answer.status != 0, f"no answer within {ANSWER_WITHIN_S}s to {method} {path} {headers}: {answer}"
    assert answer.status != 500 and answer.status < 600, (method, path, headers, answer)
    if answer.status >= 400 and answer.body and answer.headers.get("Content-Type", "").startswith("application/json"):
        assert json.loads(answer.body)["error"]  # a reason, in Triton's form
    if then_valid == 0:
        _check_valid(server, expected)


def test_the_server_still_serves_after_the_fuzz(server, expected):
    _check_valid(server, expected)
    assert server.process.poll() is None
    assert "Traceback" not in server.log and " ERROR " not in server.log, server.log[-3000:]
