"""Regenerate the Python stubs of the .proto files in ``protos/graphgen_protos/``.

The stubs are committed (so installing graphgen needs no code generator); the test
``tests/server/unit/test_protos.py`` regenerates them into a temporary folder and fails when the
committed ones differ, so a .proto edit without ``python protos/generate.py`` is caught.

Needs grpcio-tools (in the ``test`` extra).
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE = "graphgen_protos"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE).glob("*.proto"))


def generate(out_dir: Path = PROTO_ROOT) -> list[Path]:
    """Write ``<name>_pb2.py``, ``.pyi`` and ``_pb2_grpc.py`` for every .proto under ``out_dir/graphgen_protos``."""
    from grpc_tools import protoc  # imported here: only needed when generating

    (out_dir / PACKAGE).mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"  # well-known types shipped with grpcio-tools
    sources = [str(path.relative_to(PROTO_ROOT)) for path in proto_files()]
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *sources,
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}")
    return sorted(path for path in (out_dir / PACKAGE).iterdir() if "_pb2" in path.name)


if __name__ == "__main__":
    for path in generate():
        print(f"wrote {path.relative_to(PROTO_ROOT.parent)}")
    sys.exit(0)
