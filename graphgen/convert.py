"""``graphgen convert IN.onnx -o OUT.onnx``: graph conversions on any ONNX model.

Passes run in a fixed order — local functions inlined, multibranch blocks to grouped
convolutions, RepVGG blocks to one convolution, BatchNorm folding, head surgery, float16, opset —
and each reports what it rewrote, or says plainly that it found nothing. --verify runs the input
and the result on onnxruntime (CPU) with the same random inputs and fails with exit status 1
when an output differs by more than the tolerance. Head surgery changes what the model computes on purpose, so the reference for
--verify is then the input with the same new head (same seed or checkpoint) or the same cut.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from graphgen.argtypes import opset_version, output_file, positive_int
from graphgen.errors import UserError
from graphgen.metadata import HEAD
from graphgen.passes import PassResult, cut_head, fold_repvgg, group_branches, inference_form, replace_head, to_fp16
from graphgen.passes.inline import inline_functions
from graphgen.passes.opset import convert_opset
from graphgen.stats import count_parameters

EXIT_MISMATCH = 1
FP32_TOLERANCE = 1e-5
FP16_TOLERANCE = 5e-3  # float16 keeps 11 significant bits; converted CNNs land near 5e-4


@dataclass(frozen=True)
class Step:
    flag: str
    run: Callable[[ir.Model], PassResult]
    did: str  # "{n} ..." what n rewrites mean
    nothing: str  # what it says when it found nothing


_FP16_ALL = "{n} tensors, casts and inputs/outputs -> float16"
_FP16_KEPT_IO = "{n} tensors and casts -> float16; inputs and outputs kept float32 (--keep-io-types)"


def _steps(args: argparse.Namespace) -> list[Step]:
    steps = []
    if args.inline:  # first: the other passes read flat graphs
        steps.append(Step("inline", inline_functions, "{n} function call(s) inlined: a flat graph", "found no local functions"))  # fmt: skip
    if args.group_branches:
        steps.append(Step("group-branches", group_branches, "{n} multibranch block(s) -> grouped convolution", "found no multibranch blocks"))  # fmt: skip
    if args.fold_repvgg:
        steps.append(Step("fold-repvgg", fold_repvgg, "{n} RepVGG block(s) -> one convolution each", "found no RepVGG blocks"))  # fmt: skip
    if args.fold_bn:
        steps.append(Step("fold-bn", inference_form, "{n} node(s) folded away (inference form)", "found no Conv -> BatchNormalization or constant-scale pairs, no nested Concats"))  # fmt: skip
    head = _head_surgery(args)
    if head is not None:
        steps.append(head)
    if args.fp16:
        steps.append(Step("fp16", lambda m: to_fp16(m, keep_io_types=args.keep_io_types), _FP16_KEPT_IO if args.keep_io_types else _FP16_ALL, "found nothing in float32"))  # fmt: skip
    if args.opset is not None:
        steps.append(Step("opset", lambda m: convert_opset(m, args.opset), f"{{n}} node(s) checked and written at opset {args.opset}", f"already at opset {args.opset}"))  # fmt: skip
    return steps


def _head_surgery(args: argparse.Namespace) -> Step | None:
    if args.cut is not None:
        return Step("cut", lambda m: cut_head(m, args.cut), f"cut to {args.cut!r}: output 'features'", f"already cut to {args.cut!r}")  # fmt: skip
    if args.num_classes is None and args.head_weights is None:
        return None

    def new_head(model: ir.Model) -> PassResult:
        return replace_head(model, args.num_classes, weights=args.head_weights, seed=args.seed)

    return Step("head", new_head, "new classifier, {head}", "the head already has exactly these weights")


def cmd_convert(args: argparse.Namespace) -> int:
    from graphgen.onnx_io import load_model, save_model

    source, target = Path(args.input), Path(args.output)
    if target.resolve() == source.resolve():
        raise UserError(f"{target}: refusing to overwrite the input; write the result to another file")
    steps = _steps(args)
    if not steps:
        raise UserError(
            "nothing to do: ask for --inline, --group-branches, --fold-repvgg, --fold-bn, --num-classes, --cut, "
            "--fp16 or --opset"
        )
    # Weights in external data files are read now: the result and --verify's copies live elsewhere.
    original = ir.external_data.load_to_model(load_model(source))
    print(f"read {source}: {len(original.graph):,} nodes, {count_parameters(original).describe()}")
    if original.functions and not args.inline and any(step.flag not in ("opset",) for step in steps):
        # the passes rewrite the main graph only: blocks inside functions would be silently skipped
        print(
            f"convert: warning: {source} has {len(original.functions)} local function(s) whose nodes the passes "
            "do not see; add --inline to convert them too",
            file=sys.stderr,
        )

    model = original
    for step in steps:
        result = step.run(model)
        model = result.model
        if result.rewrites:
            head = model.metadata_props.get(HEAD, "")
            message = step.did.replace("{n}", str(result.rewrites)).replace("{head}", head)
        else:
            message = f"{step.nothing}; nothing changed"
        print(f"{step.flag}: {message}")
        for note in getattr(result, "notes", ()):  # onnx_ir's own passes have none
            print(f"{step.flag}: {note}")
    print(f"nodes: {len(original.graph):,} -> {len(model.graph):,}")
    before, after = count_parameters(original), count_parameters(model)
    print(f"parameters: {before.parameters:,} -> {after.parameters:,}")
    print(f"initializer elements: {before.initializer_elements:,} -> {after.initializer_elements:,}")
    save_model(model, target)
    print(f"wrote {target} ({target.stat().st_size / 1024**2:,.1f} MiB)")

    if not args.verify:
        return 0
    surgery = _head_surgery(args)
    reference = surgery.run(original).model if surgery is not None else original
    tolerance = args.tolerance if args.tolerance is not None else FP16_TOLERANCE if args.fp16 else FP32_TOLERANCE
    return 0 if verify(reference, model, tolerance, batch=args.batch, seed=args.seed) else EXIT_MISMATCH


def verify(reference: ir.Model, converted: ir.Model, tolerance: float, *, batch: int = 1, seed: int = 0) -> bool:
    """Run both on the same random inputs; print the differences; True if all within ``tolerance``.

    The relative difference is max |converted − reference| / max |reference| per output:
    elementwise ratios mean nothing where the reference is near zero.
    """
    inputs = _random_inputs(reference, batch, seed)
    expected = _run(reference, inputs)
    cast = {
        value.name: inputs[value.name].astype(value.dtype.numpy())
        for value in converted.graph.inputs
        if value.name in inputs and value.dtype is not None
    }
    actual = _run(converted, cast)
    if len(actual) != len(expected):
        print(f"verify: FAILED: {len(actual)} outputs where the reference has {len(expected)}", file=sys.stderr)
        return False
    ok = True
    for value, want, got in zip(reference.graph.outputs, expected, actual):
        if want.shape != got.shape:
            print(
                f"verify: {value.name}: FAILED: shape {list(got.shape)}, reference {list(want.shape)}", file=sys.stderr
            )
            ok = False
            continue
        difference = np.abs(got.astype(np.float64) - want.astype(np.float64))
        max_abs = float(difference.max()) if difference.size else 0.0
        relative = max_abs / max(float(np.abs(want).max()) if want.size else 0.0, 1e-30)
        verdict = "ok" if relative <= tolerance else "FAILED: beyond tolerance"
        ok = ok and relative <= tolerance
        print(
            f"verify: {value.name}: max abs diff {max_abs:.3g}, max relative diff {relative:.3g} "
            f"(tolerance {tolerance:g}): {verdict}"
        )
    return ok


def _random_inputs(model: ir.Model, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for value in model.graph.inputs:
        if value.is_initializer() or value.name is None:
            continue
        shape = [dim if isinstance(dim, int) else batch for dim in (value.shape or [])]
        dtype = value.dtype.numpy() if value.dtype is not None else np.float32
        if np.issubdtype(dtype, np.floating):
            inputs[value.name] = rng.standard_normal(shape).astype(dtype)
        else:
            inputs[value.name] = rng.integers(0, 2, shape).astype(dtype)
    return inputs


def _run(model: ir.Model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    from graphgen.onnx_io import save_model

    options = ort.SessionOptions()
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as folder:  # a file, not bytes: models may pass protobuf's 2 GB
        path = save_model(model, Path(folder) / "model.onnx")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="graph conversions: grouped convolutions, RepVGG and BatchNorm folding, new head, float16",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("input", metavar="IN.onnx")
    parser.add_argument("-o", "--output", type=output_file, required=True, metavar="OUT.onnx")
    passes = parser.add_argument_group("conversions (run in this order)")
    passes.add_argument("--inline", action="store_true", help="local functions (--functions) -> one flat graph, for runtimes without them (OpenVINO)")  # fmt: skip
    passes.add_argument("--group-branches", action="store_true", help="ResNeXt-style parallel branches -> one grouped convolution")  # fmt: skip
    passes.add_argument("--fold-repvgg", action="store_true", help="3x3 + 1x1 + identity branches -> one 3x3 convolution")  # fmt: skip
    passes.add_argument(
        "--fold-bn",
        action="store_true",
        help="the inference form: Conv -> BatchNormalization (or constant Mul) -> one Conv; nested Concats -> one",
    )
    passes.add_argument("--num-classes", type=positive_int, metavar="N", help="new classifier with N classes (random)")
    passes.add_argument("--head-weights", metavar="PATH", help="new classifier from a checkpoint (its weight/bias)")
    passes.add_argument("--seed", type=int, default=0, help="seed of the random head and of --verify's inputs")
    passes.add_argument("--cut", metavar="features|STAGE", help="drop the head: output the pooled features or a stage's map")  # fmt: skip
    passes.add_argument("--fp16", action="store_true", help="float16 weights and compute")
    passes.add_argument("--keep-io-types", action="store_true", help="with --fp16: keep float32 inputs and outputs")
    passes.add_argument("--opset", type=opset_version, metavar="N", help="write ONNX opset N (13 to 21), for older runtimes")  # fmt: skip
    check = parser.add_argument_group("verification")
    check.add_argument("--verify", action="store_true", help="compare with the input on onnxruntime; exit 1 beyond tolerance")  # fmt: skip
    check.add_argument("--tolerance", type=float, metavar="T", help=f"largest relative difference (default {FP32_TOLERANCE:g}, {FP16_TOLERANCE:g} with --fp16)")  # fmt: skip
    check.add_argument("--batch", type=positive_int, default=1, metavar="N", help="batch of random inputs (default 1)")
    parser.set_defaults(func=_checked_convert)


def _checked_convert(args: argparse.Namespace) -> int:

    if args.cut is not None and (args.num_classes is not None or args.head_weights is not None):
        raise UserError("--cut removes the head: it does not combine with --num-classes or --head-weights")
    if args.keep_io_types and not args.fp16:
        raise UserError("--keep-io-types only applies with --fp16")
    return cmd_convert(args)
