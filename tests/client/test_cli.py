"""graphgen-client: the library and the command line against a running server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphgen_client import Client, ClientError
from graphgen_client.cli import main
from tests.support.server import ServerProcess, add_tiny_model, encode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    with ServerProcess(repo) as process:
        yield process


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for name, fmt in (("a.png", "PNG"), ("b.jpg", "JPEG")):
        path = folder / name
        path.write_bytes(encode(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), fmt))
        paths.append(path)
    return paths


def test_library_classifies_paths_bytes_and_tensors(server, images):
    with Client(server.address) as client:
        client.wait_until_serving(timeout=30)
        by_path = client.classify(images, model="tiny", top_k=3)
        by_bytes = client.classify([p.read_bytes() for p in images], model="tiny", top_k=3)
        assert len(by_path.results) == 2 and by_path.results == by_bytes.results
        scores = [c.score for c in by_path.results[0].classes]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
        tensor = client.classify_tensor(np.zeros((3, 3, 32, 32), np.float32), model="tiny", top_k=10)
        assert len(tensor.results) == 3 and sum(c.score for c in tensor.results[0].classes) == pytest.approx(1.0)
        (info,) = client.models()
        assert info.name == "tiny" and info.ready and list(info.input_shape) == [-1, 3, 32, 32]
        with pytest.raises(ClientError) as unknown:
            client.health("no.such.Service")
        assert unknown.value.code.name == "NOT_FOUND"


def test_cli_classify_prints_classes_and_the_profile(server, images, capsys):
    assert (
        main(
            ["--address", server.address, "classify", *map(str, images), "--model", "tiny", "--top-k", "3", "--profile"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert str(images[0]) in out and str(images[1]) in out and "  3. " in out
    assert "_blocks.3._depthwise_conv" in out and "layers " in out and "= inference" in out


def test_cli_json_models_and_health(server, images, capsys):
    assert main(["--address", server.address, "classify", str(images[0]), "--model", "tiny", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model"] == "tiny" and len(answer["results"][0]["classes"]) == 5
    assert main(["--address", server.address, "models"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["--address", server.address, "health"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_cli_errors_exit_1_for_the_server_and_2_for_usage(server, images, tmp_path, capsys):
    assert main(["--address", server.address, "classify", str(images[0]), "--model", "nope"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["--address", server.address, "classify", str(tmp_path / "missing.png"), "--model", "tiny"]) == 2
    assert "no such file" in capsys.readouterr().err
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    assert main(["--address", server.address, "classify", str(not_an_image), "--model", "tiny"]) == 1
    assert "INVALID_ARGUMENT: images[0]" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_top_k_must_be_positive(server, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--address", server.address, "classify", "x.png", "--model", "tiny", "--top-k", value])
    assert exit_.value.code == 2
    assert "argument --top-k: expected a positive integer" in capsys.readouterr().err


def test_global_options_go_before_or_after_the_command(server, capsys):
    assert main(["health", "--address", server.address, "--timeout", "20"]) == 0
    assert main(["--address", "127.0.0.1:1", "models", "--address", server.address]) == 0
    assert "tiny" in capsys.readouterr().out


def test_an_unknown_health_service_is_named(server, capsys):
    assert main(["--address", server.address, "health", "--service", "no.such.Service"]) == 1
    err = capsys.readouterr().err
    assert "NOT_FOUND: no health status for service 'no.such.Service'" in err
    assert "'inference.GRPCInferenceService'" in err  # the services it knows
