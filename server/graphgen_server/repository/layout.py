"""A model repository in Triton's layout: ``<repo>/<model>/<version>/model.onnx``.

Versions are positive integers; a model directory may hold a ``config.pbtxt`` (read by
:mod:`graphgen_server.repository.model_config`: it may name another model file, and choose the versions
served). ``graphgen build NAME --repository DIR`` writes ``DIR/NAME/1/model.onnx``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "model.onnx"
VERSION = re.compile(r"[0-9]+")  # ASCII digits only (str.isdigit() also takes '²' and '١')


@dataclass(frozen=True)
class ModelFile:
    name: str
    version: int
    path: Path
    # Why it must not be served: its path leads outside the repository (a symlink out).
    problem: str = ""
    # (modification time in ns, size, inode) when scanned: a reload skips a version whose file is unchanged.
    stamp: tuple[int, int, int] = (0, 0, 0)


class RepositoryError(ValueError):
    """The repository directory is missing or holds no model."""


class BadModelName(ValueError):
    """A model name that is not one plain directory name (``..``, ``a/b``, an absolute path)."""


def check_model_name(name: str) -> str:
    """``name`` if it names a directory directly inside the repository, else BadModelName."""
    if not name:
        raise BadModelName("no model name given")
    if name in {".", ".."} or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise BadModelName(f"{name!r} is not a model name (one directory name: no '/', '\\', leading '.' or NUL)")
    return name


def scan_model(repository: Path, name: str, filename: str = MODEL_FILE) -> list[ModelFile]:
    """Every ``<name>/<version>/<filename>`` of one model, by version; [] if there is none.

    A version whose file (or directory) resolves outside the repository through a symlink is
    listed with its ``problem``: the server shows it not ready rather than read it.
    """
    root = repository.resolve()
    model_dir = repository / check_model_name(name)
    if not model_dir.is_dir():
        return []
    found = []
    for version_dir in model_dir.iterdir():
        path = version_dir / filename
        if VERSION.fullmatch(version_dir.name) and int(version_dir.name) > 0 and path.is_file():
            inside = path.resolve().is_relative_to(root)
            problem = "" if inside else f"{name}/{version_dir.name}/{filename} leads outside the repository"
            status = path.stat()
            stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
            found.append(ModelFile(name, int(version_dir.name), path, problem, stamp))
    return sorted(found, key=lambda f: f.version)


def model_names(repository: Path) -> list[str]:
    """The model directories of ``repository`` (RepositoryError if it is not a directory)."""
    if not repository.is_dir():
        raise RepositoryError(f"--repository {repository}: no such directory")
    names = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            names.append(check_model_name(model_dir.name))
        except BadModelName:  # a directory name no request could name (a backslash in it)
            continue
    return names


def scan(repository: Path) -> list[ModelFile]:
    """Every ``<model>/<version>/model.onnx`` under ``repository``, by name then version."""
    if not repository.is_dir():
        raise RepositoryError(f"--repository {repository}: no such directory")
    found = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            found += scan_model(repository, model_dir.name)
        except BadModelName:  # a directory name no request could name (a backslash in it)
            continue
    if not found:
        raise RepositoryError(
            f"--repository {repository}: no <model>/<version>/{MODEL_FILE} inside "
            f"(write one with `graphgen build NAME --repository {repository}`)"
        )
    return found
