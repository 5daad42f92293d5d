"""Passes as onnx_ir intends: no per-call state on the instance, composites chained by onnx_ir's Sequential."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import onnx_ir as ir
import pytest
from onnx_ir.passes.common import ClearMetadataAndDocStringPass

from graphgen.build import BuildOptions, build
from graphgen.passes import (
    FlattenConcatsPass,
    FoldBatchNormPass,
    GraphPass,
    InferenceFormPass,
    PassResult,
    Sequential,
    inference_form,
)


def _model(name: str) -> ir.Model:
    x = ir.Value(name="x", shape=ir.Shape([1, 2]), type=ir.TensorType(ir.DataType.FLOAT))
    relu = ir.node("Relu", [x], name="relu")
    graph = ir.Graph([x], relu.outputs, nodes=[relu], opset_imports={"": 21}, name=name)
    return ir.Model(graph, ir_version=10)


class Nested(GraphPass):
    """Notes before and after; on the model named "outer" it runs itself on "inner" in between."""

    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        notes.append(f"{model.graph.name}: before")
        if model.graph.name == "outer":
            notes.append(f"inner said {list(self(_model('inner')).notes)}")
        notes.append(f"{model.graph.name}: after")
        return 0


def test_a_pass_run_inside_itself_keeps_each_calls_notes() -> None:
    result = Nested()(_model("outer"))
    assert result.notes == ("outer: before", "inner said ['inner: before', 'inner: after']", "outer: after")


class Meeting(GraphPass):
    """Notes, waits until every call has noted once, notes again: the calls' notes interleave in time."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=30)

    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        notes.append(f"{model.graph.name}: first")
        self.barrier.wait()
        notes.append(f"{model.graph.name}: second")
        return 0


def test_one_instance_run_concurrently_gives_each_call_its_own_notes() -> None:
    names = ["a", "b", "c"]
    meeting = Meeting(len(names))
    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(lambda name: meeting(_model(name)), names))
    assert [result.notes for result in results] == [(f"{n}: first", f"{n}: second") for n in names]


@pytest.fixture(scope="module")
def inception_training() -> ir.Model:
    """Both kinds of work for the inference form: BatchNorms to fold and InceptionE's nested Concats."""
    return build("inception_v3", BuildOptions(keep_bn=True, batch=1, resolution=75))


def test_the_inference_form_is_an_onnx_ir_sequential_keeping_every_sub_pass_note(inception_training) -> None:
    assert isinstance(InferenceFormPass(), ir.passes.Sequential)
    folded = FoldBatchNormPass()(inception_training)
    flattened = FlattenConcatsPass()(folded.model)
    assert folded.notes and flattened.notes  # each sub-pass has something to say here
    result = inference_form(inception_training)
    assert result.notes == folded.notes + flattened.notes
    assert result.rewrites == folded.rewrites + flattened.rewrites
    assert result.modified and len(result.model.graph) == len(flattened.model.graph)
    assert len(inception_training.graph) > len(result.model.graph)  # the input is untouched


def test_the_same_inference_form_instance_concurrently_matches_one_at_a_time(inception_training) -> None:
    small = build("resnet18", BuildOptions(keep_bn=True, batch=1, resolution=32))
    models = [inception_training, small] * 2
    one_at_a_time = [inference_form(model).notes for model in models]
    shared = InferenceFormPass()
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda model: shared(model).notes, models))
    assert together == one_at_a_time and one_at_a_time[0] != one_at_a_time[1]


def test_sequential_chains_graphgen_and_onnx_ir_passes(inception_training) -> None:
    result = Sequential(FoldBatchNormPass(), ClearMetadataAndDocStringPass())(inception_training)
    assert isinstance(result, PassResult)
    assert result.notes == FoldBatchNormPass()(inception_training).notes  # onnx_ir's own pass has none to add
    assert all(not node.metadata_props for node in result.model.graph)
    assert any(node.metadata_props for node in inception_training.graph)


class Failing(GraphPass):
    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        raise ValueError("no such block")


def test_a_failing_pass_in_a_chain_is_named_with_those_before_it() -> None:
    with pytest.raises(ir.passes.PassError, match="after the following passes") as raised:
        Sequential(Nested(), Failing())(_model("m"))
    assert isinstance(raised.value.__cause__, ValueError)
