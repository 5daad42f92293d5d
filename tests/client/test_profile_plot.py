"""``graphgen-client classify … --profile --plot out.png`` and ``--trace out.json`` against a running server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphgen_client.cli import main
from tests.cli.test_plots import assert_picture
from tests.support.server import ServerProcess, add_tiny_model, encode
from tests.support.trace_events import format_errors


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    add_tiny_model(repository)
    with ServerProcess(repository) as process:
        yield process


def test_classify_profile_plot_draws_the_request(server, tmp_path, capsys):
    image = tmp_path / "noise.png"
    image.write_bytes(encode(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)))
    path = tmp_path / "profile.png"
    argv = ["--address", server.address, "classify", str(image), "--model", "tiny", "--profile"]
    assert main([*argv, "--plot", str(path), "--plot-size", "1000x1200"]) == 0
    out = capsys.readouterr().out
    assert "_blocks.3._depthwise_conv" in out and f"wrote {path}" in out  # the table, then the picture
    assert_picture(path, (1000, 1200))


def test_plot_needs_profile(server, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--address", server.address, "classify", "x.png", "--model", "tiny", "--plot", str(tmp_path / "p.png")])
    assert exit_.value.code == 2 and "add --profile" in capsys.readouterr().err


def test_classify_profile_trace_writes_the_servers_measured_runs(server, tmp_path, capsys):
    image = tmp_path / "noise.png"
    image.write_bytes(encode(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8)))
    path = tmp_path / "trace.json"
    argv = ["--address", server.address, "classify", str(image), "--model", "tiny", "--profile", "--profile-runs", "3"]
    assert main([*argv, "--trace", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    trace = json.loads(path.read_text())
    assert format_errors(trace) == []
    events = trace["traceEvents"]
    assert [e["args"]["name"] for e in events if e["name"] == "process_name"] == [
        "tiny v1 (graphgen-server) — CPUExecutionProvider"
    ]
    assert [e["name"] for e in events if e["ph"] == "X" and e.get("cat") == "run"] == ["run 1", "run 2", "run 3"]
    kernels = [e for e in events if e["ph"] == "X" and e.get("cat") != "run"]
    assert any(e["name"].startswith("_blocks.3._depthwise_conv") for e in kernels)
    assert any(e["args"]["kind"] == "depthwise conv" and e["args"]["macs"] > 0 for e in kernels)


def test_trace_needs_profile(server, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--address", server.address, "classify", "x.png", "--model", "tiny", "--trace", str(tmp_path / "t.json")])
    assert exit_.value.code == 2 and "add --profile" in capsys.readouterr().err
