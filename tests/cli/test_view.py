"""``graphgen view``: builds if needed, serves Netron on 127.0.0.1, prints the URL, cleans up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from graphgen.build import build, save
from graphgen.cli import main

STARTUP_S = 120  # building and starting on a busy 2-core machine


def test_view_builds_serves_and_cleans_up(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where the built model goes, to check it is removed
    command = [sys.executable, "-m", "graphgen", "view", "resnet18", "--port", "0", "--functions"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()  # blocks until the server is up (or the process died)
        assert line.startswith("Netron is showing resnet18.onnx at http://127.0.0.1:"), process.stderr.read()
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and b"Netron" in page.read()
        with urllib.request.urlopen(url + "data/resnet18.onnx", timeout=30) as model:
            data = model.read()
        assert b"graphgen.blocks" in data and len(data) > 40e6  # the --functions build, weights included
        assert [p.name.startswith("graphgen-view-") for p in tmp_path.iterdir()] == [True]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STARTUP_S) == 0
    assert not list(tmp_path.iterdir())


def test_view_refuses_a_taken_port(tmp_path, capsys):
    path = save(
        build(
            "alexnet",
        ),
        tmp_path / "alexnet.onnx",
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["view", str(path), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("source", "message"),
    [("resnt18", "did you mean resnet18"), ("missing.onnx", "no such file")],
)
def test_view_errors_name_what_is_wrong(source, message, capsys):
    assert main(["view", source]) == 2
    assert message in capsys.readouterr().err


def test_view_without_netron_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "netron", None)
    assert main(["view", "resnet18"]) == 2
    assert "pip install 'graphgen-onnx[view]'" in capsys.readouterr().err
