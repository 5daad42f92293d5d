"""argparse ``type=`` functions shared by graphgen's, graphgen-server's and graphgen-client's command lines.

A bad value is a usage error (argparse prints the message and exits 2). Only the standard
library is imported here: every command line loads this module at start-up.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _integer(text: str, lowest: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = lowest - 1
    if value < lowest:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1, "a positive integer")


def positive_seconds(text: str) -> float:
    """A duration above 0 (a timeout: 0 or less would fail every call before it is sent)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def count(text: str) -> int:
    """0 or a positive integer (e.g. uncounted runs, threads with 0 for the default)."""
    return _integer(text, 0, "0 or a positive integer")


def positive_or_dynamic(text: str) -> int | None:
    """A positive integer, or ``dynamic`` (None): a batch dimension."""
    return None if text == "dynamic" else _integer(text, 1, "a positive integer or 'dynamic'")


def opset_version(text: str) -> int:
    """``--opset N``: an ONNX opset graphgen can write (checked here, so the error names the flag)."""
    from graphgen.passes.opset import MAX_OPSET, MIN_OPSET  # onnx_ir: loaded only when --opset is given

    value = _integer(text, 0, "an opset number")
    if not MIN_OPSET <= value <= MAX_OPSET:
        raise argparse.ArgumentTypeError(f"graphgen writes opsets {MIN_OPSET} to {MAX_OPSET}, not {value}")
    return value


def output_file(text: str) -> Path:
    """A file to write: not a folder, and in a folder that exists (graphgen creates no folders unasked)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give the path of a file to write")
    folder = path.parent
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist; create it first"
        raise argparse.ArgumentTypeError(f"cannot write {path}: {folder} {state}")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {path}: no permission to write in {folder}")
    return path
