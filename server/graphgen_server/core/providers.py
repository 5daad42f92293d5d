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
    devices, status = _cuda_devices()
    if status:
        return f"CUDA libraries found but the CUDA runtime answered {status}", output
    if devices == 0:
        return "CUDA libraries found but no CUDA device is visible", output
    return None, output


@functools.cache
def _cuda_devices() -> tuple[int | None, str]:
    """(devices the CUDA runtime sees, or None if it cannot be asked; its failure status in words, or "").

    The status is kept: cudaErrorInsufficientDriver (a driver older than the runtime) is not
    "no device", and says what to upgrade.
    """
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
        try:
            runtime = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        status = int(runtime.cudaGetDeviceCount(ctypes.byref(count)))
        return (count.value, "") if status == 0 else (0, _status_text(runtime, status))
    return None, ""


def _status_text(runtime, status: int) -> str:
    """``cudaErrorInsufficientDriver (35): CUDA driver version is insufficient …; driver CUDA 12.4``."""
    text = f"status {status}"
    with contextlib.suppress(Exception):
        runtime.cudaGetErrorName.restype = ctypes.c_char_p
        runtime.cudaGetErrorString.restype = ctypes.c_char_p
        text = f"{runtime.cudaGetErrorName(status).decode()} ({status}): {runtime.cudaGetErrorString(status).decode()}"
    version = ctypes.c_int(0)
    with contextlib.suppress(Exception):
        if runtime.cudaDriverGetVersion(ctypes.byref(version)) == 0:
            driver = version.value
            text += f" (driver: {f'CUDA {driver // 1000}.{driver % 1000 // 10}' if driver else 'none'})"
    return text


def visible_devices() -> int | None:
    """How many CUDA devices this process sees (CUDA_VISIBLE_DEVICES applied); None if it cannot tell."""
    return _cuda_devices()[0]


def choose(device: str, cuda: CudaOptions) -> ProviderChoice:
    """The provider list for ``--device`` (auto: CUDA where it works, else CPU)."""
    if device not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return ProviderChoice([CPU], "--device cpu")
    unavailable, printed = _cuda_check()
    if unavailable is None:
        count = visible_devices()
        seen = f"{count} CUDA device(s) visible" if count else "CUDA available"
        where = f"device {cuda.device_id} (--device-id)" if cuda.device_id is not None else "every visible device"
        return ProviderChoice([(CUDA, cuda.provider_options()), CPU], f"{seen}; GPU instances on {where}")
    if device == "cuda":
        raise DeviceError(f"--device cuda: {unavailable}" + (f"\nonnxruntime said:\n{printed}" if printed else ""))
    return ProviderChoice([CPU], f"{unavailable}; running on CPU")


def provider_name(provider: str | tuple[str, dict[str, str]]) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


class FellBack(RuntimeError):
    """onnxruntime built a session without the GPU provider it was asked for."""


def check_session(instance: str, asked: list, session: ort.InferenceSession) -> list[str]:
    """What onnxruntime really built, against what was asked: FellBack without CUDA, notes for the rest.

    onnxruntime drops a provider it cannot create with a warning in its own log only (a missing
    CUDA library: the session is built on CPU, whatever ``enable_fallback`` says); an instance that
    asked for a GPU and got the CPU would serve as "KIND_GPU, gpu N" at CPU speed. So it is refused
    (the version is not ready, with this reason); an accelerator left out is said in the load line.
    """
    used = session.get_providers()
    notes = []
    for provider in (provider_name(p) for p in asked):
        if provider in used:
            continue
        if provider == CUDA:
            raise FellBack(
                f"instance {instance}: asked for {CUDA}, onnxruntime built the session on {used[0]} (the CUDA "
                "provider failed to start; onnxruntime's log says why): refused rather than served on the CPU"
            )
        notes.append(f"instance {instance}: onnxruntime did not use {provider} (asked for)")
    return notes
