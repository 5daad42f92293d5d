"""The committed gRPC stubs are current, and our KServe v2 messages match Triton's on the wire."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PROTOS = REPO / "protos"


def _generator():
    spec = importlib.util.spec_from_file_location("graphgen_proto_generate", PROTOS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_protos(tmp_path):
    pytest.importorskip("grpc_tools")
    generated = _generator().generate(tmp_path)
    assert {p.name for p in generated} >= {"classifier_pb2.py", "kserve_v2_pb2.py", "kserve_v2_pb2_grpc.py"}
    stale = [
        p.name
        for p in generated
        if not (PROTOS / "graphgen_protos" / p.name).is_file()
        or (PROTOS / "graphgen_protos" / p.name).read_bytes() != p.read_bytes()
    ]
    assert not stale, f"stubs out of date, run `python protos/generate.py`: {stale}"


def _describe(file_descriptor) -> dict:
    """Every message's fields as {full message name: {field number: [name, type, repeated]}}; services' methods."""
    out: dict = {"messages": {}, "methods": {}}

    def walk(message):
        out["messages"][message.full_name] = {
            str(f.number): [f.name, f.message_type.full_name if f.message_type else f.type, f.is_repeated]
            for f in message.fields
        }
        for nested in message.nested_types:
            walk(nested)

    for message in file_descriptor.message_types_by_name.values():
        walk(message)
    for service in file_descriptor.services_by_name.values():
        for method in service.methods:
            out["methods"][f"{service.full_name}/{method.name}"] = [
                method.input_type.full_name,
                method.output_type.full_name,
            ]
    return out


_TRITON_DUMP = """
import json, sys
sys.path.insert(0, {tests!r})
from test_protos import _describe
from tritonclient.grpc import service_pb2
print(json.dumps(_describe(service_pb2.DESCRIPTOR)))
"""


def test_kserve_messages_are_wire_compatible_with_tritonclient():
    # tritonclient's stubs define the same full names as ours: they are only ever loaded in another process.
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    done = subprocess.run(
        [sys.executable, "-c", _TRITON_DUMP.format(tests=str(Path(__file__).parent))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    triton = json.loads(done.stdout)
    from graphgen_protos import kserve_v2_pb2

    ours = _describe(kserve_v2_pb2.DESCRIPTOR)
    for method, types in ours["methods"].items():
        assert triton["methods"].get(method) == types, method
    for name, fields in ours["messages"].items():
        assert name in triton["messages"], f"{name} is not a Triton message"
        for number, field in fields.items():
            assert triton["messages"][name].get(number) == field, f"{name} field {number}: {field}"
    # The RPCs the issue names are all there.
    served = {m.split("/")[1] for m in ours["methods"]}
    assert served >= {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelStatistics",
        "RepositoryIndex",
    }
