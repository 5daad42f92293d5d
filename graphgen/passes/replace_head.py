"""Network surgery for transfer learning: a new classifier, or the network cut to its features.

The classifier of an output is found by walking back from it through shape-preserving ops
(Flatten, Softmax, ReLU, global pooling, Identity/Dropout, Squeeze/Reshape that keep the
batch and class axes) to the last layer with weights: a Gemm or MatMul [+ Add] (a Linear),
or a 1×1 Conv (SqueezeNet's classifier).

Rewrite rules:

* ``replace_head(model, N)``:  classifier(x; W [K, F], b [K])  ->  classifier(x; W′ [N, F], b′ [N]),
  W′, b′ from a checkpoint or drawn as torch initialises a Linear, U(−1/√F, 1/√F) with a seed;
  every value between the classifier and the output gets N on its class axis.
* ``cut_head(model, "features")``: the output becomes the classifier's input (the pooled
  features, [batch, F]); ``cut_head(model, "layer3")`` makes it the feature map of the last
  node of that stage (its name's leading path). Everything no output needs is removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx_ir as ir

from graphgen.errors import GraphgenError
from graphgen.metadata import CLASSIFIER_KEYS, FEATURES, HEAD, LABELS, NO_LABELS, NUM_CLASSES
from graphgen.passes.base import GraphPass, PassResult, constant, known_constant, present, set_private_input
from graphgen.passes.names import Names, sibling_name
from graphgen.passes.provenance import describe

# Ops between a classifier and its output that keep the class axis (axis 1) and its meaning.
_CLASS_PRESERVING = frozenset({"Flatten", "Identity", "Dropout", "Relu", "GlobalAveragePool", "Softmax", "LogSoftmax"})
FEATURES_OUTPUT = "features"
_SAY_HOW_MANY = "say how many classes the new head has, or give it weights"


class HeadError(GraphgenError, ValueError):
    """The model has no classifier this surgery understands, or the new weights do not fit it."""


class ReplaceHeadPass(GraphPass):
    """A new classifier of ``num_classes`` classes, or with the given ``weights`` (the rule above)."""

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        weights: Mapping[str, np.ndarray] | str | Path | None = None,
        seed: int = 0,
        output: str | None = None,
    ) -> None:
        if num_classes is None and weights is None:
            raise HeadError(_SAY_HOW_MANY)
        if num_classes is not None and num_classes < 1:
            raise HeadError(f"a head needs at least one class, got {num_classes}")
        self.num_classes, self.weights, self.seed, self.output = num_classes, weights, seed, output

    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        graph = model.graph
        head = _find_head(graph, self.output)
        new_weight, new_bias, source = self._new_head(head)
        classes = new_weight.shape[0]
        weight_layout = head.to_layout(new_weight)
        unchanged = np.array_equal(head.weight, weight_layout) and np.array_equal(head.bias, new_bias)
        if head.classes == classes and unchanged:
            return 0

        names = Names(graph)
        weight_name = present(head.node.inputs[1]).name or f"{head.node.name}.weight"
        set_private_input(graph, head.node, 1, weight_layout, head.weight.dtype, names, weight_name)
        bias_name = sibling_name(weight_name, "bias")
        set_private_input(graph, head.bias_node, head.bias_index, new_bias, head.weight.dtype, names, bias_name)
        if head.node.op_type == "Gemm":  # the new weights are meant as they are: no scaling
            head.node.attributes.pop("alpha", None)
            head.node.attributes.pop("beta", None)
        for value in head.path:  # the class axis of everything from the classifier to the output
            if value.shape is not None and len(value.shape) > 1:
                dims = list(value.shape)
                dims[1] = classes
                value.shape = ir.Shape(dims)
        model.metadata_props[NUM_CLASSES] = str(classes)
        model.metadata_props[LABELS] = NO_LABELS  # whatever the new classes are, they are not ImageNet's
        model.metadata_props[HEAD] = f"{classes} classes ({source})"
        describe(head.node, f"new head: {classes} classes ({source}) in place of {head.classes}")
        return 1

    def _new_head(self, head: _Head) -> tuple[np.ndarray, np.ndarray, str]:
        """The new weight [classes, features], bias [classes] and where they come from."""
        if self.weights is not None:
            new_weight, new_bias = _checkpoint_head(self.weights, head)
            if self.num_classes is not None and new_weight.shape[0] != self.num_classes:
                raise HeadError(f"the checkpoint's head has {new_weight.shape[0]} classes, not {self.num_classes}")
            given = self.weights
            return (
                new_weight,
                new_bias,
                f"from {Path(given).name}" if isinstance(given, str | Path) else "given weights",
            )
        if self.num_classes is None:  # __init__ refuses neither weights nor a class count
            raise HeadError(_SAY_HOW_MANY)
        rng = np.random.default_rng(self.seed)
        bound = 1.0 / np.sqrt(head.features)
        new_weight = rng.uniform(-bound, bound, (self.num_classes, head.features)).astype(np.float32)
        new_bias = rng.uniform(-bound, bound, self.num_classes).astype(np.float32)
        return new_weight, new_bias, f"random, seed {self.seed}"


def replace_head(
    model: ir.Model,
    num_classes: int | None = None,
    *,
    weights: Mapping[str, np.ndarray] | str | Path | None = None,
    seed: int = 0,
    output: str | None = None,
) -> PassResult:
    """Return a copy of ``model`` whose classifier (of ``output``, default the first) has new weights.

    ``weights``: a state dict or checkpoint file holding the classifier's weight and bias under
    the model's own names (``fc.weight``) or as ``weight``/``bias``, in torch's Linear layout
    [classes, features]. Without it, ``num_classes`` random classes. ``rewrites`` is 0 when the
    new head is exactly the current one.
    """
    return ReplaceHeadPass(num_classes, weights=weights, seed=seed, output=output)(model)


class CutHeadPass(GraphPass):
    """The output becomes ``features``: the pooled features, or a stage's feature map (the rule above)."""

    def __init__(self, at: str = FEATURES_OUTPUT) -> None:
        self.at = at

    def rewrite(self, model: ir.Model, notes: list[str]) -> int:
        graph, at = model.graph, self.at
        if model.metadata_props.get(FEATURES) == at and [v.name for v in graph.outputs] == [FEATURES_OUTPUT]:
            return 0  # cut there already
        if at == FEATURES_OUTPUT:
            value = present(_find_head(graph, None).node.inputs[0])
            if value.is_graph_input():
                raise HeadError("the classifier reads the model input directly: there are no features to cut to")
        else:
            value = _stage_output(graph, at)
        if len(graph.outputs) == 1 and graph.outputs[0] is value:
            return 0
        graph.outputs.clear()
        graph.outputs.append(value)
        value.name = FEATURES_OUTPUT if not _name_taken(graph, value) else value.name
        for key in CLASSIFIER_KEYS:
            model.metadata_props.pop(key, None)
        model.metadata_props[FEATURES] = at
        return 1  # what no output needs any more is removed with the unused nodes


def cut_head(model: ir.Model, at: str = FEATURES_OUTPUT) -> PassResult:
    """Return a copy of ``model`` whose only output is ``features``: the pooled features, or a stage's map."""
    return CutHeadPass(at)(model)


class _Head:
    """The classifier: its node, where its weight and bias live, and the values up to the output."""

    def __init__(self, node: ir.Node, path: list[ir.Value], bias_add: ir.Node | None = None) -> None:
        self.node, self.path = node, path  # path: from the output back to the classifier's own output
        self.weight = known_constant(node.inputs[1])
        self.bias_node, self.bias_index = node, 2
        if node.op_type == "Gemm":
            self.transposed = node.attributes.get_int("transB", 0) == 1
            self.classes, self.features = self.weight.shape if self.transposed else self.weight.shape[::-1]
        elif node.op_type == "MatMul":
            self.transposed = False
            self.features, self.classes = self.weight.shape
            if bias_add is not None:
                self.bias_node = bias_add
                self.bias_index = 1 if bias_add.inputs[0] is node.outputs[0] else 0
        else:  # 1×1 Conv
            self.transposed = True
            self.classes, self.features = self.weight.shape[:2]
        inputs = self.bias_node.inputs
        bias = constant(inputs[self.bias_index]) if len(inputs) > self.bias_index else None
        self.bias = np.zeros(self.classes, self.weight.dtype) if bias is None else bias.reshape(-1)

    def to_layout(self, linear_weight: np.ndarray) -> np.ndarray:
        """A torch Linear weight [classes, features] in this classifier's own layout."""
        if self.node.op_type == "Conv":
            return linear_weight.reshape(*linear_weight.shape, 1, 1)
        return linear_weight if self.transposed else linear_weight.T


def _find_head(graph: ir.Graph, output: str | None) -> _Head:
    if output is None:
        value = graph.outputs[0]
    else:
        matches = [v for v in graph.outputs if v.name == output]
        if not matches:
            raise HeadError(f"no output named {output!r}; outputs: {', '.join(v.name or '?' for v in graph.outputs)}")
        value = matches[0]
    name, path = value.name, []
    while True:
        node = value.producer()
        if node is None:
            raise HeadError(f"found no classifier before output {name!r}")
        path.append(value)
        if node.op_type in ("Gemm", "MatMul", "Conv") and _is_classifier(node):
            return _Head(node, path)
        matmul = _matmul_with_bias(node) if node.op_type == "Add" else None
        if matmul is not None:
            return _Head(matmul, [*path, matmul.outputs[0]], bias_add=node)
        if node.op_type not in _CLASS_PRESERVING and not _keeps_class_axis(node):
            raise HeadError(
                f"found no classifier before output {name!r}: it comes from {node.op_type} node {node.name!r}, "
                "which is no Linear (Gemm/MatMul) or 1x1 Conv"
            )
        value = present(node.inputs[0])


def _is_classifier(node: ir.Node) -> bool:
    weight = constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None:
        return False
    if node.op_type == "Conv":
        return weight.ndim == 4 and weight.shape[2:] == (1, 1) and node.attributes.get_int("group", 1) == 1
    if node.op_type == "Gemm" and node.attributes.get_int("transA", 0) != 0:
        return False
    return weight.ndim == 2


def _matmul_with_bias(add: ir.Node) -> ir.Node | None:
    """The MatMul of a Linear exported as MatMul + Add(bias), if ``add`` is that Add."""
    for data, bias in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
        producer = data.producer() if data is not None else None
        if producer is None or producer.op_type != "MatMul" or len(producer.inputs) < 2:
            continue
        weight, bias_array = constant(producer.inputs[1]), constant(bias)
        if weight is not None and bias_array is not None and weight.ndim == 2 and bias_array.size == weight.shape[1]:
            return producer
    return None


def _keeps_class_axis(node: ir.Node) -> bool:
    """Squeeze of spatial axes, or Reshape to [batch, -1] / [0, -1]: the class axis stays axis 1."""
    if node.op_type == "Squeeze":
        axes = constant(node.inputs[1]) if len(node.inputs) > 1 else None
        return axes is not None and all(int(a) in (2, 3, -1, -2) for a in axes.reshape(-1))
    if node.op_type == "Reshape":
        target = constant(node.inputs[1])
        return target is not None and target.size == 2 and int(target[1]) == -1
    return False


def _checkpoint_head(weights: Mapping[str, np.ndarray] | str | Path, head: _Head) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(weights, str | Path):
        from graphgen.checkpoint import load_checkpoint

        weights = load_checkpoint(weights)
    own = present(head.node.inputs[1]).name or ""
    prefix = own[: -len("weight")] if own.endswith("weight") else None
    for weight_key, bias_key in ((own, f"{prefix}bias" if prefix is not None else None), ("weight", "bias")):
        if weight_key in weights:
            weight = np.asarray(weights[weight_key], dtype=np.float32)
            weight = weight.reshape(weight.shape[:2]) if weight.ndim == 4 and weight.shape[2:] == (1, 1) else weight
            if weight.ndim != 2 or weight.shape[1] != head.features:
                raise HeadError(
                    f"checkpoint {weight_key!r} has shape {list(weight.shape)}; the classifier needs "
                    f"[classes, {head.features}]"
                )
            bias = weights.get(bias_key) if bias_key else None
            bias = np.zeros(weight.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32).reshape(-1)
            if bias.shape != (weight.shape[0],):
                raise HeadError(f"checkpoint {bias_key!r} has {bias.size} values for {weight.shape[0]} classes")
            return weight, bias
    keys = ", ".join(list(weights)[:8]) or "none"
    raise HeadError(f"the checkpoint has no classifier weight {own!r} or 'weight' (its keys: {keys})")


def _stage_output(graph: ir.Graph, stage: str) -> ir.Value:
    """The first output of the last node whose name lies under ``stage`` (``layer3``, ``stages.2``)."""
    wanted = stage.strip("/").replace("/", ".")
    last = None
    for node in graph:
        path = (node.name or "").strip("/").replace("/", ".")
        if path == wanted or path.startswith(wanted + "."):
            last = node
    if last is None:
        stages = sorted({(node.name or "").strip("/").replace("/", ".").split(".")[0] for node in graph} - {""})
        raise HeadError(f"no node named {stage!r} or under it; top-level names: {', '.join(stages[:20])}")
    return last.outputs[0]


def _name_taken(graph: ir.Graph, value: ir.Value) -> bool:
    return any(v is not value and v.name == FEATURES_OUTPUT for v in graph.inputs) or any(
        out is not value and out.name == FEATURES_OUTPUT for node in graph for out in node.outputs
    )
