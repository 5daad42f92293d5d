"""Triton's own clients against graphgen-server: tritonclient's ``utils.shared_memory`` over both protocols, and
NVIDIA's perf_analyzer (its default random data, NaN and all; ``--shared-memory system``) where it is installed
(``$PERF_ANALYZER`` or ``perf_analyzer`` on PATH; the tritonclient 2.50.0 wheel ships it).

tritonclient's protobuf names clash with graphgen's, so its side runs as a script in a subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.support.perf_analyzer import needs_perf_analyzer, run_perf_analyzer
from tests.support.server import ServerProcess, add_tiny_model

CLIENT_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

grpc_address, http_address, tag = sys.argv[1], sys.argv[2], sys.argv[3]
x = np.random.default_rng(7).standard_normal((2, 3, 32, 32), dtype=np.float32)
seen = {}
for protocol, client, module in (("grpc", tgrpc.InferenceServerClient(grpc_address), tgrpc),
                                 ("http", thttp.InferenceServerClient(http_address), thttp)):
    plain = module.InferInput("input", list(x.shape), "FP32")
    plain.set_data_from_numpy(x)
    expected = client.infer("tiny", [plain]).as_numpy("logits")
    key_in, key_out = f"/graphgen_{tag}_{protocol}_in", f"/graphgen_{tag}_{protocol}_out"
    region_in = shm.create_shared_memory_region("in", key_in, x.nbytes)
    region_out = shm.create_shared_memory_region("out", key_out, expected.nbytes)
    try:
        shm.set_shared_memory_region(region_in, [x])
        client.unregister_system_shared_memory()
        client.register_system_shared_memory("in", key_in, x.nbytes)
        client.register_system_shared_memory("out", key_out, expected.nbytes)
        status = client.get_system_shared_memory_status()
        names = sorted(status.regions) if protocol == "grpc" else sorted(r["name"] for r in status)
        tensor = module.InferInput("input", list(x.shape), "FP32")
        tensor.set_shared_memory("in", x.nbytes)
        output = module.InferRequestedOutput("logits")
        output.set_shared_memory("out", expected.nbytes)
        result = client.infer("tiny", [tensor], outputs=[output])
        answered = result.get_output("logits")
        shape = list(answered.shape) if protocol == "grpc" else answered["shape"]
        equal = bool(np.array_equal(shm.get_contents_as_numpy(region_out, np.float32, shape), expected))
        try:
            client.register_system_shared_memory("in", key_in, x.nbytes)
            twice = "no error"
        except InferenceServerException as error:
            twice = error.message()
        client.unregister_system_shared_memory("in")
        after = client.get_system_shared_memory_status()
        left = sorted(after.regions) if protocol == "grpc" else sorted(r["name"] for r in after)
        client.unregister_system_shared_memory()
    finally:
        shm.destroy_shared_memory_region(region_in)
        shm.destroy_shared_memory_region(region_out)
    seen[protocol] = {"names": names, "equal": equal, "shape": shape,
                      "twice": twice, "left": left}
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    add_tiny_model(repository)
    with ServerProcess(repository, ["--allow-client-shm"]) as process:
        yield process


@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="tritonclient not installed")
def test_tritonclient_shared_memory_over_both_protocols(server):
    done = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT, server.address, server.http_address, str(os.getpid())],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout)
    for protocol in ("grpc", "http"):
        answer = seen[protocol]
        assert answer["names"] == ["in", "out"] and answer["shape"] == [2, 10], answer
        assert answer["equal"], f"{protocol}: the output written to shared memory differs from the in-request answer"
        assert "already in manager" in answer["twice"] and answer["left"] == ["out"], answer
    assert "system shared-memory region 'in' registered" in server.log


FRONTENDS_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

grpc_address, http_address, tag, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
x = np.random.default_rng(11).standard_normal((1, 3, 32, 32), dtype=np.float32)
region_in = shm.create_shared_memory_region("in", f"/graphgen_{tag}_in", x.nbytes)
region_out = shm.create_shared_memory_region("out", f"/graphgen_{tag}_out", 40)
shm.set_shared_memory_region(region_in, [x])


def infer_everywhere():
    # A new client each call: a new connection, which the OS hands to any front-end process (SO_REUSEPORT).
    outcomes = []
    for _ in range(calls):
        client = tgrpc.InferenceServerClient(grpc_address)
        tensor = tgrpc.InferInput("input", list(x.shape), "FP32")
        tensor.set_shared_memory("in", x.nbytes)
        output = tgrpc.InferRequestedOutput("logits")
        output.set_shared_memory("out", 40)
        try:
            client.infer("tiny", [tensor], outputs=[output])
            outcomes.append("ok")
        except InferenceServerException as error:
            outcomes.append(error.message())
        client.close()
    return outcomes


try:
    tgrpc.InferenceServerClient(grpc_address).register_system_shared_memory("in", f"/graphgen_{tag}_in", x.nbytes)
    thttp.InferenceServerClient(http_address).register_system_shared_memory("out", f"/graphgen_{tag}_out", 40)
    registered = infer_everywhere()
    thttp.InferenceServerClient(http_address).unregister_system_shared_memory()
    unregistered = infer_everywhere()
finally:
    shm.destroy_shared_memory_region(region_in)
    shm.destroy_shared_memory_region(region_out)
print(json.dumps({"registered": registered, "unregistered": unregistered}))
"""


@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="tritonclient not installed")
def test_a_region_registered_through_one_frontend_serves_through_every_one(tmp_path):
    add_tiny_model(tmp_path)
    with ServerProcess(tmp_path, ["--allow-client-shm", "--frontends", "2"]) as process:
        done = subprocess.run(
            [sys.executable, "-c", FRONTENDS_SCRIPT, process.address, process.http_address, f"f{os.getpid()}", "24"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout)
    assert seen["registered"] == ["ok"] * 24, seen["registered"]
    assert all("no system shared-memory region" in o and "(regions: none)" in o for o in seen["unregistered"]), seen


@needs_perf_analyzer
@pytest.mark.parametrize(
    ("protocol", "extra"),
    [("grpc", ()), ("http", ()), ("grpc", ("--shared-memory", "system")), ("http", ("--shared-memory", "system"))],
    ids=["grpc random data", "http random data", "grpc shared memory", "http shared memory"],
)
def test_perf_analyzer_runs(server, protocol, extra):
    done = run_perf_analyzer(server, protocol, *extra)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Throughput:" in done.stdout and "Successful request count" in done.stdout
