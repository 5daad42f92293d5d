"""Helpers of the deploy tests: render deploy/kubernetes with `kubectl kustomize`, find objects in it,
and read the server's flags from a container's args with graphgen-server's own parser.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from graphgen_server.cli import make_parser

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
KSERVE = REPO / "deploy" / "kserve"
KUBERNETES_VERSION = "1.32"
KUBECTL = shutil.which("kubectl")
OVERLAYS = ("gpu", "cpu")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: kustomize overlays not rendered")


def render(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize DIRECTORY` writes (what `kubectl apply -k` would apply)."""
    assert KUBECTL is not None
    done = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def render_overlay(overlay: str) -> list[dict]:
    return render(KUBERNETES / "overlays" / overlay)


def render_with_components(tmp_path: Path, overlay: str, components: tuple[str, ...]) -> list[dict]:
    """An overlay plus components, the way a user would add them (relative paths: kustomize refuses absolute)."""
    relative = os.path.relpath(KUBERNETES, tmp_path)
    kustomization = {
        "resources": [f"{relative}/overlays/{overlay}"],
        "components": [f"{relative}/components/{c}" for c in components],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(tmp_path)


def one(objects: list[dict], kind: str, name: str = "graphgen-server") -> dict:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_template(objects: list[dict]) -> dict:
    return one(objects, "Deployment")["spec"]["template"]


def server_container(objects: list[dict]) -> dict:
    (container,) = pod_template(objects)["spec"]["containers"]
    return container


def server_flags(args: list[str]) -> argparse.Namespace:
    """The args parsed by graphgen-server's own parser (an unknown flag or bad value fails the test)."""
    try:
        return make_parser().parse_args(args)
    except SystemExit as error:
        raise AssertionError(f"graphgen-server refuses {args}") from error
