"""``graphgen convert IN.onnx -o OUT.onnx``: graph conversions on any ONNX model.

Passes run in a fixed order — local functions inlined, multibranch blocks to grouped
convolutions, RepVGG blocks to one convolution, BatchNorm folding, head surgery, float16, opset —
and each reports what it rewrote, or says plainly that it found nothing. --verify runs the input
and the result on onnxruntime (CPU) with the same random inputs and fails with exit status 1
when an output differs by more than the tolerance. Head surgery changes what the model computes on purpose, so the
reference for --verify is then the input with the same new head (same seed or checkpoint) or the same cut.

The flags are parsed into a :class:`~graphgen.convert.ConvertOptions`, each flag's ``dest`` named as
its field; the work is :mod:`graphgen.convert`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import onnx_ir as ir

from graphgen.argtypes import opset_version, output_file, positive_int
from graphgen.convert import (
    CALIBRATION_METHODS,
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    Conversion,
    ConvertOptions,
    StepReport,
    convert,
    plan,
    reference_for,
)
from graphgen.convert import verify as verify_outputs
from graphgen.errors import UserError
from graphgen.stats import count_parameters

EXIT_MISMATCH = 1


def options_from(args: argparse.Namespace) -> ConvertOptions:
    """The parsed flags as :class:`ConvertOptions` (every field is a flag of the same ``dest``)."""
    return ConvertOptions(**{field.name: getattr(args, field.name) for field in dataclasses.fields(ConvertOptions)})


def _print_step(report: StepReport) -> None:
    for line in report.lines():
        print(line)


def cmd_convert(args: argparse.Namespace) -> int:
    from graphgen.onnx_io import load_model, save_model

    options = options_from(args)  # contradictions in the flags fail first
    source, target = Path(args.input), Path(args.output)
    if target.resolve() == source.resolve():
        raise UserError(f"{target}: refusing to overwrite the input; write the result to another file")
    steps = plan(options)
    # Weights in external data files are read now: the result and --verify's copies live elsewhere.
    original = ir.external_data.load_to_model(load_model(source))
    print(f"read {source}: {len(original.graph):,} nodes, {count_parameters(original).describe()}")
    if original.functions and not options.inline and any(step.flag != "opset" for step in steps):
        # the passes rewrite the main graph only: blocks inside functions would be silently skipped
        print(
            f"convert: warning: {source} has {len(original.functions)} local function(s) whose nodes the passes "
            "do not see; add --inline to convert them too",
            file=sys.stderr,
        )

    conversion = convert(original, options, on_step=_print_step)
    model = conversion.model
    print(f"nodes: {len(original.graph):,} -> {len(model.graph):,}")
    before, after = count_parameters(original), count_parameters(model)
    print(f"parameters: {before.parameters:,} -> {after.parameters:,}")
    print(f"initializer elements: {before.initializer_elements:,} -> {after.initializer_elements:,}")
    save_model(model, target)
    print(f"wrote {target} ({target.stat().st_size / 1024**2:,.1f} MiB)")

    if options.int8:
        return _int8_verdict(conversion)
    if not options.verify:
        return 0
    checks = verify_outputs(
        reference_for(original, options), model, options.verify_tolerance, batch=options.batch, seed=options.seed
    )
    for check in checks:
        # the figures go to stdout; outputs that could not even be compared are errors
        print(check.line, file=sys.stdout if check.max_abs is not None else sys.stderr)
    return 0 if all(check.ok for check in checks) else EXIT_MISMATCH


def _int8_verdict(conversion: Conversion) -> int:
    """--int8 --verify's report: every layer's SQNRs, then the agreement and the layers to look at."""
    outcome = conversion.int8
    if outcome is None or outcome.report is None:
        return 0
    print(f"verify: held out (never calibrated on): {', '.join(path.name for path in outcome.held_out)}")
    for line in outcome.report.table():
        print(f"verify: {line}")
    for line in outcome.report.lines():
        print(line)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="graph conversions: grouped convolutions, RepVGG and BatchNorm folding, new head, float16",
        description=(__doc__ or "").split("\n\n")[1],
    )
    parser.add_argument("input", metavar="IN.onnx")
    parser.add_argument("-o", "--output", type=output_file, required=True, metavar="OUT.onnx")
    passes = parser.add_argument_group("conversions (run in this order)")
    passes.add_argument(
        "--inline",
        action="store_true",
        help="local functions (--functions) -> one flat graph, for runtimes without them (OpenVINO)",
    )
    passes.add_argument(
        "--group-branches", action="store_true", help="ResNeXt-style parallel branches -> one grouped convolution"
    )
    passes.add_argument(
        "--fold-repvgg", action="store_true", help="3x3 + 1x1 + identity branches -> one 3x3 convolution"
    )
    passes.add_argument(
        "--fold-bn",
        action="store_true",
        help="the inference form: Conv -> BatchNormalization (or constant Mul) -> one Conv; nested Concats -> one",
    )
    passes.add_argument("--num-classes", type=positive_int, metavar="N", help="new classifier with N classes (random)")
    passes.add_argument("--head-weights", metavar="PATH", help="new classifier from a checkpoint (its weight/bias)")
    passes.add_argument("--seed", type=int, default=0, help="seed of the random head and of --verify's inputs")
    passes.add_argument(
        "--cut", metavar="features|STAGE", help="drop the head: output the pooled features or a stage's map"
    )
    passes.add_argument("--fp16", action="store_true", help="float16 weights and compute")
    passes.add_argument("--keep-io-types", action="store_true", help="with --fp16: keep float32 inputs and outputs")
    passes.add_argument(
        "--opset", type=opset_version, metavar="N", help="write ONNX opset N (13 to 21), for older runtimes"
    )
    int8 = parser.add_argument_group(
        "int8 (onnxruntime's quantize_static: QDQ, signed int8, per-channel weights; runs after the conversions)"
    )
    int8.add_argument("--int8", action="store_true", help="int8 weights and activations, calibrated on images")
    int8.add_argument(
        "--calibrate",
        nargs="+",
        default=(),
        metavar="DIR|FILE",
        help="calibration images (folders are searched for .jpg/.png/...), preprocessed as the model's metadata says",
    )
    int8.add_argument(
        "--calibration-method",
        choices=CALIBRATION_METHODS,
        default="minmax",
        help="how activation ranges are chosen from the calibration (default minmax)",
    )
    int8.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor, not per output channel")
    int8.add_argument(
        "--activations",
        choices=("int8", "uint8"),
        default="int8",
        help="activation type (default int8; onnxruntime's x86 CPU fuses every convolution only with uint8)",
    )
    int8.add_argument(
        "--keep-float",
        nargs="+",
        default=(),
        metavar="LAYER",
        help="layers left float, by graphgen name (graphgen stats)",
    )
    int8.add_argument(
        "--auto-keep",
        type=positive_int,
        metavar="K",
        help="leave the K layers whose int8 costs the logits most float; report agreement and latency before and after",
    )
    int8.add_argument(
        "--verify-images",
        nargs="+",
        default=(),
        metavar="DIR|FILE",
        help="held-out images that judge int8 (default: every 4th --calibrate image, then not calibrated on)",
    )
    check = parser.add_argument_group("verification")
    check.add_argument(
        "--verify",
        action="store_true",
        help="compare with the input on onnxruntime; exit 1 beyond tolerance (--int8: agreement and per-layer SQNR)",
    )
    check.add_argument(
        "--tolerance",
        type=float,
        metavar="T",
        help=f"largest relative difference (default {FP32_TOLERANCE:g}, {FP16_TOLERANCE:g} with --fp16)",
    )
    check.add_argument("--batch", type=positive_int, default=1, metavar="N", help="batch of random inputs (default 1)")
    parser.set_defaults(func=cmd_convert)
