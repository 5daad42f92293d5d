"""What a new user met first: ports (bound before loading, printed for scripts) and the client's options."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from graphgen_client.cli import main as client_main
from tests.support.server import ServerProcess, add_tiny_model


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    return repo


@pytest.fixture(scope="module")
def server(repository):
    with ServerProcess(repository) as process:
        yield process


@pytest.mark.parametrize("option", ["--port", "--http-port", "--metrics-port"])
def test_a_busy_port_stops_the_server_before_any_model_loads(repository, option):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ports = {"--port": "0", "--http-port": "auto", "--metrics-port": "auto", option: port}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "graphgen_server",
                "--repository",
                str(repository),
                *(item for pair in ports.items() for item in pair),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    assert "cannot listen" in done.stderr and f"127.0.0.1:{port}" in done.stderr
    assert "model tiny" not in done.stderr and "Traceback" not in done.stderr  # nothing was loaded


def test_chosen_ports_are_printed_one_per_line(repository):
    command = [sys.executable, "-m", "graphgen_server", "--repository", str(repository), "--port", "0"]
    command += ["--http-port", "auto", "--metrics-port", "auto"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(3)]
        ports = dict(line.split("=") for line in lines)
        assert sorted(ports) == ["grpc_port", "http_port", "metrics_port"] and all(p.isdigit() for p in ports.values())
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['http_port']}/v2/health/ready", timeout=30) as ready:
            assert ready.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics_port']}/metrics", timeout=30) as metrics:
            assert b"nv_inference_count" in metrics.read()
        assert client_main(["health", "--address", f"127.0.0.1:{ports['grpc_port']}"]) == 0
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=60)
    assert process.returncode == 0
    assert re.search(rf"listening on 127\.0\.0\.1:{ports['grpc_port']}\b", log)  # logged as well
    assert f"HTTP/REST on 127.0.0.1:{ports['http_port']}" in log


def test_side_ports_can_be_turned_off(repository):
    with ServerProcess(repository, ["--http-port", "0", "--metrics-port", "0"]) as server:
        assert server.http_port == 0 and server.metrics_port == 0
    assert "HTTP/REST" not in server.log and server.returncode == 0


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_top_k_must_be_positive(server, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        client_main(["--address", server.address, "classify", "x.png", "--model", "tiny", "--top-k", value])
    assert exit_.value.code == 2
    assert "argument --top-k: expected a positive integer" in capsys.readouterr().err


def test_global_options_go_before_or_after_the_command(server, capsys):
    assert client_main(["health", "--address", server.address, "--timeout", "20"]) == 0
    assert client_main(["--address", "127.0.0.1:1", "models", "--address", server.address]) == 0
    assert "tiny" in capsys.readouterr().out


def test_an_unknown_health_service_is_named(server, capsys):
    assert client_main(["--address", server.address, "health", "--service", "no.such.Service"]) == 1
    err = capsys.readouterr().err
    assert "NOT_FOUND: no health status for service 'no.such.Service'" in err
    assert "'inference.GRPCInferenceService'" in err  # the services it knows


def test_http_readiness_turns_400_on_sigterm_while_calls_are_still_answered(repository):
    def status(url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    with ServerProcess(repository, ["--pre-stop-delay", "3"]) as server:
        base = f"http://{server.http_address}/v2"
        assert status(f"{base}/health/ready") == 200
        server.signal(signal.SIGTERM)
        deadline = time.monotonic() + 2.5
        while status(f"{base}/health/ready") == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Readiness probes move traffic away, and calls are still answered meanwhile.
        assert status(f"{base}/health/ready") == 400 and status(f"{base}/health/live") == 200
        assert status(f"{base}/models/tiny") == 200
        assert server.wait() == 0
