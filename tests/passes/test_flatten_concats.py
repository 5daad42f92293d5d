"""flatten_concats: nested same-axis Concats become one, with equal outputs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphgen.build import BuildOptions, build
from graphgen.metadata import FLATTENED
from graphgen.passes import flatten_concats, inference_form
from tests.support.passes import assert_equivalent, check_contract, op_counts


def _nested_concats() -> ir.Model:
    """Inception-v3's InceptionE shape (a pair concatenated inside the block's concatenation), and what must stay.

    Written by hand: torch's exporter flattens nested concatenations itself.
    """
    x = ir.Value(name="x", shape=ir.Shape([1, 3, 4, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    rng = np.random.default_rng(0)
    nodes: list[ir.Node] = []

    def op(op_type: str, inputs: list[ir.Value], **attributes) -> ir.Value:
        node = ir.node(op_type, inputs, attributes, name=f"{op_type}_{len(nodes)}")
        node.outputs[0].name = f"v{len(nodes)}"
        nodes.append(node)
        return node.outputs[0]

    weights = [
        ir.Value(name=f"w{i}", const_value=ir.Tensor(rng.standard_normal((2, 3, 1, 1)).astype(np.float32)))
        for i in range(5)
    ]
    a, b, c, d, e = (op("Conv", [x, w]) for w in weights)
    middle = op("Concat", [op("Concat", [b, c], axis=1), d], axis=-3)  # the rank tells that -3 is axis 1
    middle.shape = ir.Shape([1, 6, 4, 4])
    nested = op("Concat", [a, middle, e], axis=1)  # two levels deep: both flatten
    twice = op("Concat", [d, e], axis=1)
    kept = op("Add", [op("Concat", [twice, a], axis=1), op("Concat", [twice, b], axis=1)])  # read twice: stays
    spatial = op("Concat", [op("Concat", [a, b], axis=1), op("Concat", [c, d], axis=1)], axis=3)  # other axis
    graph = ir.Graph([x], [nested, kept, spatial], nodes=nodes, initializers=weights, opset_imports={"": 21})
    return ir.Model(graph, ir_version=10)


def test_nested_concats_flatten() -> None:
    model = _nested_concats()
    assert op_counts(model)["Concat"] == 9
    flat = check_contract(flatten_concats, model, expect=2)
    assert op_counts(flat)["Concat"] == 7
    outer = flat.graph.outputs[0].producer()
    assert [value.name for value in outer.inputs] == ["v0", "v1", "v2", "v3", "v4"]
    assert outer.metadata_props[FLATTENED] == "Concat_6, Concat_5"
    assert_equivalent(model, flat, batch=1)


def test_inference_form_says_what_it_flattened() -> None:
    """``graphgen convert --fold-bn`` runs the inference form: it flattens, and says so."""
    result = inference_form(_nested_concats())
    assert result.rewrites == 2
    assert result.notes == ("2 nested Concat(s) flattened into the Concat reading them",)


def test_graphgen_inception_v3() -> None:
    """InceptionE's 3×3 pairs: nested in the training form, one Concat per block in the inference form."""
    training = build("inception_v3", BuildOptions(keep_bn=True, batch=1, resolution=75))
    inference = build("inception_v3", BuildOptions(batch=1, resolution=75))
    assert op_counts(training)["Concat"] - op_counts(inference)["Concat"] == 4
    assert_equivalent(training, inference, batch=1)
