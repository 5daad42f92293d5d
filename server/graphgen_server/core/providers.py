"""Which execution provider runs the models, and one sentence saying why.

onnxruntime-gpu lists the CUDA provider even where CUDA is not installed; asking for it then
logs an error about a missing library and silently runs on CPU. So before asking, the CUDA
provider's own library is loaded once: that resolves every CUDA/cuDNN library it links
against and names the first one missing. Then the device count is asked of the CUDA runtime.

onnxruntime's ``preload_dlls`` prints a "Failed to load libcublasLt.so.13 ..." line per missing
library (on stdout, where the server writes its ports for scripts to read). Those lines are
captured: with ``--device auto`` graphgen's own log line says CUDA is missing and why, and they
go to the debug log; with ``--device cuda`` they are part of the error.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from graphgen_server.config import CudaOptions

log = logging.getLogger("graphgen_server")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "cuda", "cpu")


class DeviceError(RuntimeError):
    """``--device cuda`` was asked for and CUDA cannot be used."""


@dataclass(frozen=True)
class ProviderChoice:
    """The providers to ask onnxruntime for, in order, and why."""

    providers: list[str | tuple[str, dict[str, str]]]
    reason: str

    @property
    def wants_cuda(self) -> bool:
        return any((p[0] if isinstance(p, tuple) else p) == CUDA for p in self.providers)


def cuda_unavailable_reason() -> str | None:
    """None when the CUDA provider can run here, else why it cannot (checked once per process)."""
    return _cuda_check()[0]


@functools.cache
def _cuda_check() -> tuple[str | None, str]:
    """(why CUDA cannot run here, or None; what onnxruntime printed while looking for its libraries)."""
    if CUDA not in ort.get_available_providers():
        return f"this onnxruntime build has no CUDA provider (onnxruntime {ort.__version__})", ""
    # CUDA from nvidia-* wheels where installed; failing that, the system's library paths are searched.
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), contextlib.suppress(Exception):
        ort.preload_dlls(cuda=True, cudnn=True, msvc=False)
    output = printed.getvalue().strip()
    if output:
        log.debug("onnxruntime.preload_dlls: %s", output)
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    try:
        ctypes.CDLL(str(library))
    except OSError as error:
        missing = str(error).split(":")[0] if "cannot open shared object" in str(error) else str(error)
        return f"CUDA libraries not found ({missing})", output
    devices = _cuda_device_count()
    if devices == 0:
        return "CUDA libraries found but no CUDA device is visible", output
    return None, output


def _cuda_device_count() -> int | None:
    """Devices the CUDA runtime sees (None if it cannot be asked: then session creation decides)."""
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
        try:
            runtime = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        status = runtime.cudaGetDeviceCount(ctypes.byref(count))
        return count.value if status == 0 else 0
    return None


def choose(device: str, cuda: CudaOptions) -> ProviderChoice:
    """The provider list for ``--device`` (auto: CUDA where it works, else CPU)."""
    if device not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return ProviderChoice([CPU], "--device cpu")
    unavailable, printed = _cuda_check()
    if unavailable is None:
        return ProviderChoice([(CUDA, cuda.provider_options()), CPU], f"CUDA device {cuda.device_id} available")
    if device == "cuda":
        raise DeviceError(f"--device cuda: {unavailable}" + (f"\nonnxruntime said:\n{printed}" if printed else ""))
    return ProviderChoice([CPU], f"{unavailable}; running on CPU")


def describe_session(choice: ProviderChoice, session: ort.InferenceSession) -> tuple[str, str]:
    """The provider a session actually runs on first, and the reason to log for it."""
    used = session.get_providers()[0]
    if choice.wants_cuda and used != CUDA:
        return used, "the CUDA provider failed to initialise (onnxruntime's log says why); running on CPU"
    return used, choice.reason
