"""A CUDA stream of its own per GPU instance, and IO binding on it that leaves the host free during a run.

Triton's onnxruntime backend gives each instance a CUDA stream and makes it the session's compute
stream; so does this module (``user_compute_stream``, a *non-blocking* stream: not ordered with the
legacy default stream, nor with the other instances' streams). A run then goes:

1. each input is copied host→device with ``cudaMemcpyAsync`` on the instance's stream into a device
   buffer the instance keeps (grown when a larger batch comes) and bound there (``bind_input`` on
   ``cuda``). onnxruntime's own ``bind_cpu_input`` would copy at bind time with ``cudaMemcpy`` on the
   legacy default stream, which every blocking stream waits for (and every instance with it);
2. the outputs are bound on the device, and the session runs with
   ``disable_synchronize_execution_providers``: ``run_with_iobinding`` returns once the kernels are
   queued, not when they are done;
3. each output is copied device→host on the same stream into a numpy array, and the stream is
   synchronised once (cuda-bindings releases the GIL while it waits).

Where cuda-bindings is missing, instances bind from host memory as onnxruntime does it, on its own
stream, and the load line says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from graphgen.profiling.cuda import check


class InstanceStream:
    """One instance's non-blocking CUDA stream on its device, with the device buffers of its inputs."""

    def __init__(self, device: int) -> None:
        from cuda.bindings import runtime

        self._rt = runtime
        self.device = device
        check(runtime.cudaSetDevice(device), f"cudaSetDevice({device})")
        self.stream = check(
            runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )
        self._buffers: dict[str, tuple[int, int]] = {}  # input name -> (device pointer, bytes)
        self._run_options = ort.RunOptions()
        # Our copy back and our one synchronisation follow on the same stream: onnxruntime need not wait.
        self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    @property
    def handle(self) -> str:
        """The stream's address as onnxruntime's ``user_compute_stream`` option wants it."""
        return str(int(self.stream))

    def run(
        self, session: ort.InferenceSession, feeds: dict[str, np.ndarray], names: Sequence[str], dtypes: Sequence[Any]
    ) -> list[np.ndarray]:
        """One run of ``session`` (computing on this stream) with ``feeds``; the outputs ``names`` on the host."""
        rt = self._rt
        check(rt.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")  # worker threads change device
        binding = session.io_binding()
        to_device, to_host = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, given in feeds.items():
            array = np.ascontiguousarray(given)
            pointer = self._buffer(name, array.nbytes)
            check(
                rt.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, to_device, self.stream), "cudaMemcpyAsync"
            )
            binding.bind_input(name, "cuda", self.device, array.dtype, list(array.shape), pointer)
        for name in names:
            binding.bind_output(name, "cuda", self.device)
        session.run_with_iobinding(binding, self._run_options)
        outputs = []
        for value, dtype in zip(binding.get_outputs(), dtypes):
            host = np.empty(value.shape(), dtype)
            check(
                rt.cudaMemcpyAsync(host.ctypes.data, value.data_ptr(), host.nbytes, to_host, self.stream),
                "cudaMemcpyAsync",
            )
            outputs.append(host)
        check(rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return outputs

    def _buffer(self, name: str, nbytes: int) -> int:
        """The device buffer of input ``name``, at least ``nbytes`` (the previous run is done: it synchronised)."""
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                check(self._rt.cudaFree(pointer), "cudaFree")
            size = max(nbytes, 2 * size)
            pointer = int(check(self._rt.cudaMalloc(size), f"cudaMalloc({size})"))
            self._buffers[name] = (pointer, size)
        return pointer

    def close(self) -> None:
        """Free the buffers and the stream (after the session computing on it is gone; idempotent)."""
        buffers, self._buffers = self._buffers, {}
        for pointer, _ in buffers.values():
            self._rt.cudaFree(pointer)
        stream, self.stream = self.stream, None
        if stream is not None:
            self._rt.cudaStreamDestroy(stream)
