"""graphgen-server's ports: bound before any model loads, printed one per line for scripts, side ports optional."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from graphgen_client.cli import main as client_main
from tests.support.server import ServerProcess, add_tiny_model


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    return repo


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
    # gRPC's "Closing acceptor. Failed accept4" error line (most stops) comes after graphgen says why (issue 20).
    lines = log.splitlines()
    # (With several front-ends the supervisor says it once before any of them closes its port.)
    said = [i for i, line in enumerate(lines) if "gRPC port and its connections before gRPC's stop" in line]
    assert said and all(i > said[0] for i, line in enumerate(lines) if "Closing acceptor" in line), log
    readme = " ".join((Path(__file__).parents[3] / "README.md").read_text().split())
    assert "Closing acceptor. Failed accept4: Invalid argument` on most stops" in readme


def test_side_ports_can_be_turned_off(repository):
    with ServerProcess(repository, ["--http-port", "0", "--metrics-port", "0"]) as server:
        assert server.http_port == 0 and server.metrics_port == 0
    assert "HTTP/REST" not in server.log and server.returncode == 0
