"""onnxscript's private graph-builder API, which graphgen's tracing relies on, is as expected.

If one of these fails after an onnxscript upgrade, its message names what changed: adapt
graphgen/onnxscript_api.py (the only module that touches onnxscript) or keep the pinned version.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from onnxscript._internal import builder

import graphgen
from graphgen.onnxscript_api import OnnxscriptChangedError, check_builder_api


def test_onnxscript_builder_behaves_as_graphgen_relies_on():
    try:
        check_builder_api()
    except OnnxscriptChangedError as error:
        pytest.fail(str(error), pytrace=False)


def test_a_builder_that_writes_no_module_metadata_is_reported(monkeypatch):
    monkeypatch.setattr(builder.GraphBuilder, "_annotate_node", lambda self, node: None)
    with pytest.raises(OnnxscriptChangedError, match=r"pkg\.onnxscript\.class_hierarchy.*\n.*name_scopes"):
        check_builder_api()


def test_a_changed_scope_path_is_reported(monkeypatch):
    monkeypatch.setattr(builder.GraphBuilder, "_scope_name_parts", lambda self: ["?"])
    with pytest.raises(OnnxscriptChangedError, match=r"_scope_name_parts\(\) gave \[\['\?'\]\]"):
        check_builder_api()


def test_a_removed_private_method_is_reported(monkeypatch):
    monkeypatch.delattr(builder.GraphBuilder, "_scope_name_parts")
    with pytest.raises(OnnxscriptChangedError, match="tracing failed: AttributeError"):
        check_builder_api()


def test_no_other_graphgen_module_imports_onnxscript():
    package = Path(graphgen.__file__).parent
    importers = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(module.split(".")[0] == "onnxscript" for module in modules):
                importers.append(path.relative_to(package).as_posix())
    assert sorted(set(importers)) == ["onnxscript_api.py"]
