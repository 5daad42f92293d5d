"""Shared checks of the graph-conversion tests: export, run, compare, and the pass contract."""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx_ir as ir

from graphgen.passes import PassResult

FP32_RELATIVE = 1e-5  # the bound for float32 rewrites, relative to the largest output value


def export(module, shape: tuple[int, ...], path: Path, *, dynamo: bool = False, keep_bn: bool = False) -> ir.Model:
    """``torch.onnx.export`` in eval mode; ``keep_bn`` stops the exporter folding BatchNorm itself.

    The TorchScript exporter (``dynamo=False``) names nodes after module paths and, in eval mode,
    folds Conv+BatchNorm; the dynamo exporter does the same fold in its optimiser.
    """
    import torch

    torch.set_num_threads(1)  # the test machine is small and shared: more threads only contend
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {"training": torch.onnx.TrainingMode.PRESERVE} if keep_bn and not dynamo else {}
        if dynamo:
            kwargs = {"optimize": not keep_bn, "verbose": False}
        torch.onnx.export(
            module,
            (torch.randn(*shape),),
            str(path),
            dynamo=dynamo,
            input_names=["input"],
            output_names=["output"],
            **kwargs,
        )
    return ir.external_data.load_to_model(ir.load(path))  # the dynamo exporter writes weights beside the file


def randomize_batchnorm(module, seed: int = 0) -> None:
    """Random running statistics and affine parameters, so no BatchNorm is the identity."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                n = layer.num_features
                layer.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                layer.bias.copy_(torch.randn(n, generator=generator) * 0.2)
                layer.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                layer.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


def run(model: ir.Model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    # Graph optimisations off: compare the graphs as written, not as onnxruntime rewrites them.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory() as folder:  # ir.save streams weights: much faster than SerializeToString
        path = Path(folder) / "model.onnx"
        ir.save(model, path)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def random_inputs(model: ir.Model, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {}
    for value in model.graph.inputs:
        shape = [dim if isinstance(dim, int) else batch for dim in value.shape]
        inputs[value.name] = rng.standard_normal(shape).astype(value.dtype.numpy())
    return inputs


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest difference relative to the largest reference value (elementwise ratios blow up near 0)."""
    return float(np.max(np.abs(actual.astype(np.float64) - expected)) / max(float(np.max(np.abs(expected))), 1e-30))


def assert_equivalent(
    before: ir.Model, after: ir.Model, *, tolerance: float = FP32_RELATIVE, batch: int = 2, seed: int = 0
) -> float:
    """Both graphs on the same random input: every output within ``tolerance`` (relative)."""
    inputs = random_inputs(before, batch, seed)
    worst = 0.0
    for expected, actual in zip(run(before, inputs), run(after, inputs), strict=True):
        assert actual.shape == expected.shape
        worst = max(worst, relative_error(actual, expected))
    assert worst <= tolerance, f"outputs differ by {worst:.3g} relative (allowed {tolerance:g})"
    return worst


def fingerprint(model: ir.Model) -> str:
    """A digest of everything a pass could change: nodes, attributes, names, shapes, weight bytes."""
    digest = hashlib.blake2b(digest_size=16)
    graph = model.graph

    def describe(value: ir.Value | None) -> str:
        return "" if value is None else f"{value.name}:{value.type}:{value.shape}"

    parts = [repr(sorted(model.metadata_props.items())), *(describe(v) for v in graph.inputs)]
    parts += [describe(v) for v in graph.outputs]
    for node in graph:
        attributes = sorted((name, repr(attr.value)) for name, attr in node.attributes.items())
        parts.append(
            f"{node.domain}:{node.op_type}:{node.name}:{[describe(v) for v in node.inputs]}:"
            f"{[describe(v) for v in node.outputs]}:{attributes}:{sorted(node.metadata_props.items())}"
        )
    for name, value in graph.initializers.items():
        parts.append(f"{name}:{describe(value)}")
        digest.update(np.ascontiguousarray(value.const_value.numpy()).view(np.uint8))
    digest.update("\n".join(parts).encode())
    return digest.hexdigest()


def check_contract(rewrite: Callable[[ir.Model], PassResult], model: ir.Model, *, expect: int) -> ir.Model:
    """The pass contract: ``expect`` rewrites, the input untouched, a second run a no-op."""
    before = fingerprint(model)
    result = rewrite(model)
    assert isinstance(result, ir.passes.PassResult)  # onnx_ir's result: Sequential and PassManager read it
    assert result.rewrites == expect
    assert result.modified or expect == 0
    assert result.model is not model
    assert fingerprint(model) == before, "the pass changed its input model"
    node_names = [node.name for node in result.model.graph if node.name]
    assert len(node_names) == len(set(node_names)), "two nodes share a name (onnxruntime refuses that)"
    again = rewrite(result.model)
    assert again.rewrites == 0
    assert fingerprint(again.model) == fingerprint(result.model), "a second run changed the graph"
    return result.model


def op_counts(model: ir.Model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def simplifier_changes(model: ir.Model) -> dict[str, dict[str, int]]:
    """What onnxsim and onnxslim change in ``model``: per tool, the change of each op's count (empty: none).

    A fixed point of both has nothing to remove or fold: every op count stays. Initializers are
    not compared: both tools merge equal tensors, and a randomly initialised build has many
    (every folded bias is 0 where BatchNorm starts from β = μ = 0). Their output is swallowed.
    """
    import contextlib
    import io

    import onnxsim
    import onnxslim

    proto = ir.to_proto(model)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        results = {"onnxsim": onnxsim.simplify(proto)[0], "onnxslim": onnxslim.slim(proto)}

    def counts(graph) -> dict[str, int]:
        found: dict[str, int] = {}
        for node in graph.node:
            found[node.op_type] = found.get(node.op_type, 0) + 1
        return found

    before = counts(proto.graph)
    changes = {}
    for tool, result in results.items():
        after = counts(result.graph)
        changes[tool] = {op: after.get(op, 0) - before.get(op, 0) for op in before.keys() | after.keys()}
        changes[tool] = {op: delta for op, delta in changes[tool].items() if delta}
    return changes
