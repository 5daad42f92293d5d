"""What the server says while it loads a repository: a model built with random weights says so in its
load line, and a model folder holding no version is named with what it holds instead of skipped in silence."""

from __future__ import annotations

import asyncio
import logging

from graphgen.metadata import RANDOM_WEIGHTS, WEIGHTS, random_weights_note
from graphgen_server.config import ServerConfig
from graphgen_server.core.runtime import LocalRuntime
from tests.support.server import add_tiny_model


def test_random_weights_and_folders_without_a_version_are_said(tmp_path, caplog):
    add_tiny_model(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "typo" / "v1").mkdir(parents=True)
    (tmp_path / "typo" / "v1" / "model.onnx").write_bytes(b"")
    runtime = LocalRuntime(ServerConfig(repository=tmp_path, device="cpu", workers=2))
    with caplog.at_level(logging.INFO, logger="graphgen_server"):
        runtime.load()
    asyncio.run(runtime.close())
    lines = [record.getMessage() for record in caplog.records]
    (load_line,) = [line for line in lines if line.startswith("model tiny v1:")]
    assert "random weights (built without --weights): its classes mean nothing" in load_line
    assert "model empty: not served, no version: expected empty/<version number>/model.onnx, found nothing" in lines
    assert "model typo: not served, no version: expected typo/<version number>/model.onnx, found v1/" in lines
    assert [m.name for m in runtime.all()] == ["tiny"]


def test_only_random_weights_are_called_random():
    assert random_weights_note({WEIGHTS: RANDOM_WEIGHTS}) is not None
    assert random_weights_note({WEIGHTS: "efficientnet_lite0.pth"}) is None
    assert random_weights_note({}) is None  # a model graphgen did not build
