"""graphgen list reads graphgen/data/architectures.json: it must agree with the registry, and load no network code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from graphgen import catalog, registry

STALE = "graphgen/data/architectures.json is stale: run `python -m graphgen.catalog`"


def test_the_listing_agrees_with_the_registry():
    rows = catalog.read()
    assert [row["name"] for row in rows] == registry.names(), STALE
    for row in rows:
        assert row == catalog.row(row["name"], parameters=row["parameters"]), STALE
        declared = registry.get(row["name"]).reference_params
        if declared is not None:  # tests/builder/test_architectures.py checks these against the built graph
            assert row["parameters"] == declared, STALE


@pytest.mark.parametrize("name", [a.name for a in registry.architectures() if a.reference_params is None])
def test_parameters_without_a_published_figure_are_counted(name):
    assert catalog.read()[registry.names().index(name)]["parameters"] == catalog.traced_parameters(name), STALE


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["list", "--json"], ["--version"]])
def test_help_and_list_load_no_network_code(argv):
    """onnxscript/onnx_ir (and sympy under them) take about a second to import: --help and list must not."""
    heavy = ("onnxscript", "onnx_ir", "sympy", "numpy", "onnx")
    script = (
        "import sys\nfrom graphgen.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = result.stdout.strip().splitlines()[-1]
    assert loaded == "[]", f"graphgen {' '.join(argv)} imported {loaded}"
