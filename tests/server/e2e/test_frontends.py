"""``--frontends 2``: two processes on the same ports behave as one server.

Statistics and /metrics count every request once, model control reaches both, a second server on
the port still fails, the ports are printed once, a killed front-end is replaced (and replays the
model control made before), SIGTERM under looping clients ends no call CANCELLED.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest

from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_protos import kserve_v2_pb2_grpc
from tests.support.server import ServerProcess, add_tiny_model, child_pids, connections_to, sigterm_trials

FRONTENDS = ["--frontends", "2", "--device", "cpu"]
CHANNELS = 16  # separate connections: the kernel spreads them over both front-ends


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    add_tiny_model(repo, name="other")
    return repo


def infer_request(model: str = "tiny", size: int = 32) -> pb.ModelInferRequest:
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    return request


@contextmanager
def stubs(address: str, count: int = CHANNELS) -> Iterator[list[kserve_v2_pb2_grpc.GRPCInferenceServiceStub]]:
    """``count`` stubs, each on a connection of its own (no subchannel shared between them)."""
    with ExitStack() as stack:
        channels = [
            stack.enter_context(grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]))
            for _ in range(count)
        ]
        found = [kserve_v2_pb2_grpc.GRPCInferenceServiceStub(c) for c in channels]
        for stub in found:
            stub.ServerLive(pb.ServerLiveRequest(), timeout=30)  # connected
        yield found


def frontends_of(server: ServerProcess) -> list[int]:
    assert server.process is not None
    return child_pids(server.process.pid)


def assert_both_frontends_hold_connections(server: ServerProcess) -> None:
    pids = frontends_of(server)
    held = {pid: connections_to(pid, server.port) for pid in pids}
    assert len(pids) == 2 and all(held.values()), held


def statistics(stub) -> pb.ModelStatistics:
    (stats,) = stub.ModelStatistics(pb.ModelStatisticsRequest(name="tiny", version="1"), timeout=30).model_stats
    return stats


def scraped(server: ServerProcess, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=30).read().decode()
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    match = re.search(rf"^{name}{{{re.escape(wanted)}}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{wanted}}} not in:\n{text}"
    return float(match.group(1))


def test_statistics_and_metrics_count_every_request_once(repository):
    grpc_calls, http_calls, failures = 3, 8, 4
    with ServerProcess(repository, FRONTENDS) as server, stubs(server.address) as found:
        assert_both_frontends_hold_connections(server)
        for stub in found:
            for _ in range(grpc_calls):
                stub.ModelInfer(infer_request(), timeout=60)
        for stub in found[:failures]:
            with pytest.raises(grpc.RpcError):  # a shape the model does not take: counted as failed
                stub.ModelInfer(infer_request(size=16), timeout=60)
        x = np.zeros((1, 3, 32, 32), np.float32)
        body = json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": x.ravel().tolist()}]}
        )
        for _ in range(http_calls):  # a connection each: they spread too
            connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
            connection.request("POST", "/v2/models/tiny/infer", body, {"Content-Type": "application/json"})
            assert connection.getresponse().status == 200
            connection.close()
        made = CHANNELS * grpc_calls + http_calls
        for stub in found:  # whichever front-end answers, every request counted once
            stats = statistics(stub)
            assert stats.inference_stats.success.count == made and stats.inference_count == made
            assert stats.execution_count == made and stats.inference_stats.fail.count == failures
        labels = {"model": "tiny", "version": "1"}
        for _ in range(4):
            assert scraped(server, "nv_inference_request_success", **labels) == made
            assert scraped(server, "nv_inference_count", **labels) == made
            assert scraped(server, "nv_inference_request_failure", reason="OTHER", **labels) == failures
        config = found[0].ModelConfig(pb.ModelConfigRequest(name="tiny"), timeout=30).config
        assert [g.count for g in config.instance_group] == [2]  # Triton's default, over both front-ends
    assert "front-end 0 of 2 runs 1 of the server's 2 instance(s)" in server.log


def test_dynamic_batching_is_said_to_batch_within_each_frontend(tmp_path):
    add_tiny_model(tmp_path)
    with ServerProcess(tmp_path, [*FRONTENDS, "--dynamic-batching", "on"]) as server, stubs(server.address, 2) as found:
        for stub in found:
            stub.ModelInfer(infer_request(), timeout=60)
        config = found[0].ModelConfig(pb.ModelConfigRequest(name="tiny"), timeout=30).config
    assert config.HasField("dynamic_batching")
    assert "dynamic batches formed within each of the 2 front-end processes" in server.log


def test_instance_counts_are_shared_by_the_frontends_and_answered_server_wide(tmp_path):
    add_tiny_model(tmp_path, name="three")
    add_tiny_model(tmp_path, name="one")
    for name, count in (("three", 3), ("one", 1)):
        (tmp_path / name / "config.pbtxt").write_text(f"instance_group [{{ count: {count} kind: KIND_CPU }}]\n")
    with ServerProcess(tmp_path, FRONTENDS) as server, stubs(server.address, 1) as (stub,):
        answered = {
            name: [
                g.count for g in stub.ModelConfig(pb.ModelConfigRequest(name=name), timeout=30).config.instance_group
            ]
            for name in ("three", "one")
        }
    assert answered == {"three": [3], "one": [2]}  # a count below the front-ends: one in each
    assert "model three v1:" in server.log and "front-end 0 of 2 runs 2 of the server's 3 instance(s)" in server.log
    assert "front-end 0 of 2 runs 1 of the server's 2 instance(s) (one per front-end)" in server.log


def test_model_control_is_seen_by_every_frontend(repository):
    with ServerProcess(repository, [*FRONTENDS, "--model-control"]) as server, stubs(server.address) as found:
        assert_both_frontends_hold_connections(server)
        found[0].RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="other"), timeout=60)
        assert not any(s.ModelReady(pb.ModelReadyRequest(name="other"), timeout=30).ready for s in found)
        assert all(s.ModelReady(pb.ModelReadyRequest(name="tiny"), timeout=30).ready for s in found)
        found[7].RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="other"), timeout=120)
        for stub in found:
            assert stub.ModelReady(pb.ModelReadyRequest(name="other"), timeout=30).ready
            stub.ModelInfer(infer_request("other"), timeout=60)


def test_a_killed_frontend_is_replaced_and_replays_model_control(repository):
    with ServerProcess(repository, [*FRONTENDS, "--model-control"]) as server:
        with stubs(server.address, 1) as (stub,):
            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="other"), timeout=60)
        before = frontends_of(server)
        os.kill(before[1], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while "exited unexpectedly (killed by SIGKILL)" not in server.log:
            assert time.monotonic() < deadline, server.log
            time.sleep(0.2)
        while len(after := frontends_of(server)) < 2 or before[1] in after:
            assert time.monotonic() < deadline, server.log
            time.sleep(0.2)
        with ExitStack() as stack:
            found = stack.enter_context(stubs(server.address))
            deadline = time.monotonic() + 120
            while not all(connections_to(pid, server.port) for pid in after):
                assert time.monotonic() < deadline, server.log  # (until it listens, connections go to the other)
                time.sleep(0.5)
                found += stack.enter_context(stubs(server.address, 4))
            for stub in found:
                assert not stub.ModelReady(pb.ModelReadyRequest(name="other"), timeout=30).ready
                stub.ModelInfer(infer_request(), timeout=60)
    assert server.returncode == 0, server.log


def serve_raw(*args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "graphgen_server", "--host", "127.0.0.1", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("first, second", [(2, 2), (2, 1), (1, 2)])
def test_a_second_server_on_the_same_port_fails_to_start(repository, first, second):
    with ServerProcess(repository, ["--frontends", str(first), "--device", "cpu"]) as server:
        for ports in (
            ["--port", str(server.port), "--http-port", "0"],
            ["--port", "0", "--http-port", str(server.http_port)],
        ):
            rival = serve_raw(
                "--repository",
                str(repository),
                *ports,
                "--metrics-port",
                "0",
                "--frontends",
                str(second),
                "--device",
                "cpu",
            )
            out, err = rival.communicate(timeout=120)
            assert rival.returncode == 2 and "cannot listen" in err and "Address already in use" in err, err
            assert not out
        with stubs(server.address, 1) as (stub,):
            stub.ModelInfer(infer_request(), timeout=60)


def test_chosen_ports_are_printed_once_and_sigterm_stops_every_frontend(repository):
    server = serve_raw(
        "--repository", str(repository), "--port", "0", "--http-port", "auto", "--metrics-port", "auto", *FRONTENDS
    )
    try:
        assert server.stdout is not None
        lines = [server.stdout.readline().strip() for _ in range(3)]
        assert [line.split("=")[0] for line in lines] == ["grpc_port", "http_port", "metrics_port"], lines
        ports = {line.split("=")[0]: int(line.split("=")[1]) for line in lines}
        assert len(set(ports.values())) == 3 and all(ports.values())
        pids = child_pids(server.pid)
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0 and not out, err  # (nothing more on stdout)
    assert err.count("listening on 127.0.0.1") == 1 and len(pids) == 2
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="tritonclient not installed")
def test_sigterm_under_16_looping_clients_ends_no_call_cancelled(repository):
    trials = 3
    results, totals = sigterm_trials(repository, "tiny", 32, trials, *FRONTENDS)
    print(f"{trials} SIGTERM trials, 2 front-ends, 16 tritonclient loops: {totals}")
    assert all(r["returncode"] == 0 for r in results), results
    assert all(outcome == "OK" or outcome.startswith("UNAVAILABLE") for outcome in totals), totals
    assert all(r["counts"]["OK"] > r["ok_at_signal"] for r in results), results


@pytest.mark.parametrize("started", [1, 2])
def test_sigterm_while_the_frontends_start_stops_them_all_and_exits_0(repository, started):
    """Also when the signal comes between two front-ends' starts (one had been left serving until killed)."""
    server = serve_raw(
        "--repository", str(repository), "--port", "0", "--http-port", "0", "--metrics-port", "0", *FRONTENDS
    )
    try:
        deadline = time.monotonic() + 60
        while len(child_pids(server.pid)) < started:  # front-ends exist, and are still starting
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.05)
        pids = child_pids(server.pid)
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, err
    assert not out and "listening on" not in err
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
