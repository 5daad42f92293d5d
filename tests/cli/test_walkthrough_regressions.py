"""Regressions found by walking through the README as a new user: each is what a shell user meets first."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from graphgen_server.cli import make_parser as server_parser

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.parametrize("arguments", [["list"], ["list", "--json"], ["stats", "alexnet"]])
def test_a_closed_pipe_ends_the_command_quietly(arguments):
    """`graphgen list | head`: the reader leaving early is no bug, so no traceback."""
    command = [sys.executable, "-c", "import sys; from graphgen.cli import main; sys.exit(main())", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    process.stdout.close()  # before the command has written anything: its first write meets a closed pipe
    _, stderr = process.communicate(timeout=120)
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr.decode()
    assert process.returncode == 1


@pytest.mark.parametrize("option", ["--port", "--http-port", "--metrics-port"])
def test_a_port_beyond_65535_is_refused(option, capsys):
    with pytest.raises(SystemExit) as stop:
        server_parser().parse_args(["--repository", ".", option, "99999"])
    assert stop.value.code == 2
    assert "a port is 0 to 65535, not 99999" in capsys.readouterr().err


def test_ports_in_range_still_parse():
    args = server_parser().parse_args(["--repository", ".", "--port", "65535", "--http-port", "0"])
    assert args.port == 65535 and args.http_port is None


def test_fp16_with_kept_io_types_says_the_io_stays_float32(tmp_path, capsys):
    """`convert --fp16 --keep-io-types` reported 'inputs/outputs -> float16' while it kept them float32."""
    import onnx

    from graphgen.cli import main
    from tests.support.server import add_tiny_model

    source = add_tiny_model(tmp_path / "repository")
    assert main(["convert", str(source), "-o", str(tmp_path / "half.onnx"), "--fp16", "--keep-io-types"]) == 0
    assert "inputs and outputs kept float32" in capsys.readouterr().out
    graph = onnx.load(str(tmp_path / "half.onnx"), load_external_data=False).graph
    assert {value.type.tensor_type.elem_type for value in [*graph.input, *graph.output]} == {onnx.TensorProto.FLOAT}


def test_every_server_option_says_its_default():
    """--help named no default for --grace (10 s) nor --max-image-pixels."""
    text = server_parser().format_help()
    assert "SIGTERM (default 10)" in text and "(default 40M)" in text


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "soon"])
def test_a_client_timeout_that_cannot_work_is_refused(timeout, capsys):
    """`graphgen-client --timeout -1` went on to dial the server and failed with a gRPC error."""
    from graphgen_client.cli import main as client_main

    with pytest.raises(SystemExit) as stop:
        client_main(["--timeout", timeout, "health"])
    assert stop.value.code == 2
    assert "expected a positive number of seconds" in capsys.readouterr().err
