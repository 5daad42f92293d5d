"""A model repository in Triton's layout: ``<repo>/<model>/<version>/model.onnx``.

Versions are positive integers; a model directory may hold a ``config.pbtxt`` (ignored: what the
server needs, graphgen writes into the model's own metadata). ``graphgen build NAME --repository
DIR`` writes ``DIR/NAME/1/model.onnx``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class ModelFile:
    name: str
    version: int
    path: Path


class RepositoryError(ValueError):
    """The repository directory is missing or holds no model."""


def scan(repository: Path) -> list[ModelFile]:
    """Every ``<model>/<version>/model.onnx`` under ``repository``, by name then version."""
    if not repository.is_dir():
        raise RepositoryError(f"--repository {repository}: no such directory")
    found = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for version_dir in model_dir.iterdir():
            if version_dir.is_dir() and version_dir.name.isdigit() and int(version_dir.name) > 0:
                path = version_dir / MODEL_FILE
                if path.is_file():
                    found.append(ModelFile(model_dir.name, int(version_dir.name), path))
    if not found:
        raise RepositoryError(
            f"--repository {repository}: no <model>/<version>/{MODEL_FILE} inside "
            f"(write one with `graphgen build NAME --repository {repository}`)"
        )
    return sorted(found, key=lambda f: (f.name, f.version))
