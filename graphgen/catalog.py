"""The architectures as ``graphgen list`` shows them, kept in graphgen/data/architectures.json.

The registry's families import the network code, and with it onnxscript and onnx_ir (about a
second); listing them must not. So the listing is written once from the registry, by
``python -m graphgen.catalog``, and read back as data; tests/builder/test_catalog.py fails, saying to
rerun that command, whenever the file and the registry disagree. Parameters are torch's count
(:func:`graphgen.stats.count_parameters` of the network traced at its defaults).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

FILE = "architectures.json"


def read() -> list[dict[str, Any]]:
    """The rows of ``graphgen list``, from the data file (imports nothing heavy)."""
    return json.loads(resources.files("graphgen.data").joinpath(FILE).read_text(encoding="utf-8"))


def row(name: str, parameters: int | None = None) -> dict[str, Any]:
    """One architecture's row; its parameters counted on its traced network unless given."""
    from graphgen import registry

    arch = registry.get(name)
    return {
        "name": arch.name,
        "family": arch.family,
        "parameters": parameters if parameters is not None else traced_parameters(name),
        "resolution": arch.resolution,
        "reference": arch.reference,
        "options": [option.usage for option in arch.options],
        "description": arch.description,
    }


def traced_parameters(name: str) -> int:
    """torch's parameter count of the architecture at its defaults (traced, no weights drawn)."""
    import onnx_ir as ir

    from graphgen import registry
    from graphgen.build import IR_VERSION, trace
    from graphgen.stats import count_parameters

    arch = registry.get(name)
    network = arch.network()
    graph = trace(network, name, network.resolution or arch.resolution, batch=1)
    return count_parameters(ir.Model(graph, ir_version=IR_VERSION)).parameters


def write() -> str:
    """Rewrite the data file from the registry; returns its path."""
    from graphgen import registry

    target = resources.files("graphgen.data").joinpath(FILE)
    rows = [row(name) for name in registry.names()]
    with resources.as_file(target) as path:
        path.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return str(path)


if __name__ == "__main__":
    print(f"wrote {write()}")
