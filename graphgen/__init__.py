"""graphgen: the classic CNN architectures emitted straight into ONNX."""

from __future__ import annotations

__version__ = "0.1.0"
