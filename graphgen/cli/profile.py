"""``graphgen profile FORM [FORM …]``: per-layer time over repeated runs, beside MACs and bytes, in-process.

    graphgen profile resnet50 [--batch 8] [--runs 10] [--device cpu|cuda] [--json] [--plot PNG] [--roofline PNG]
    graphgen profile resnet50.onnx resnet50_int8.onnx 'resnet50 --fp16' [--plot PNG] [--trace FILE]
    graphgen profile resnet50 --runtime onnxruntime --runtime openvino

A FORM is an architecture name (built with the build flags) or an .onnx file, optionally followed,
in the same quoted argument, by ``graphgen convert`` flags that make another form of it
(``'repvgg_a0 --keep-bn'``, ``'train.onnx --fold-repvgg'``). One form on one runtime prints its
profile; several forms, or several ``--runtime``s, print one table by graphgen layer with each
one's median and spread and the ratios to the first (:mod:`graphgen.profiling.comparison`).

No server needed: the same profiler core the server uses (:mod:`graphgen.profiling.session`),
through :mod:`graphgen.profiling.inprocess`; OpenVINO's through :mod:`graphgen.profiling.openvino`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from graphgen.argtypes import count, positive_int
from graphgen.cli.common import add_build_arguments, add_run_arguments, add_runtime_arguments, model_file
from graphgen.errors import UserError
from graphgen.plots import plot_path_argument
from graphgen.profiling.chrome_trace import trace_path_argument
from graphgen.profiling.inprocess import ONNXRUNTIME, format_profile, profile_model, providers, session_options
from graphgen.profiling.session import DEFAULT_WARMUP_RUNS
from graphgen.profiling.summary import Profile


@dataclass(frozen=True)
class Column:
    """One profiled form on one runtime: a column of the comparison."""

    label: str
    path: Path  # the model file profiled (the layer names and Q/DQ owners are read from it)
    profile: Profile


def _form_parser(form: str) -> argparse.ArgumentParser:
    """``graphgen convert``'s own parser, whose errors name the form they come from."""
    from graphgen.cli.convert import add_parser

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UserError(f"profile {form!r}: {message} (after the model come graphgen convert's flags)")

    parser = Parser(prog="graphgen profile", add_help=False)
    add_parser(parser.add_subparsers())
    return parser


def form_file(form: str, args: argparse.Namespace, directory: Path, index: int) -> Path:
    """The model file of ``form``: a name built, a file as it is, either converted by the flags that follow it."""
    try:
        source, *flags = shlex.split(form)
    except ValueError as error:
        raise UserError(f"profile {form!r}: {error}") from None
    if not flags:
        return model_file(source, args, directory)
    from graphgen.cli.common import model_from
    from graphgen.cli.convert import options_from
    from graphgen.convert import convert
    from graphgen.onnx_io import save_model

    options = options_from(_form_parser(form).parse_args(["convert", source, "-o", "unused.onnx", *flags]))
    model = convert(model_from(source, args), options).model
    return save_model(model, directory / f"form{index}.onnx")


def _columns(args: argparse.Namespace, directory: Path) -> list[Column]:
    runtimes = list(dict.fromkeys(args.runtime or [ONNXRUNTIME]))
    columns = []
    for index, form in enumerate(args.forms):
        path = form_file(form, args, directory, index)
        for runtime in runtimes:
            profile = profile_model(
                path,
                args.batch,
                args.runs,
                args.warmup,
                args.device,
                args.threads,
                args.cudnn_conv_algo_search,
                runtime=runtime,
                openvino_precision=args.openvino_precision,
            )
            label = form if len(runtimes) == 1 else f"{form} on {runtime}"
            columns.append(Column(label, path, profile))
            print(f"  profiled {label}", file=sys.stderr)
    return columns


def cmd_profile(args: argparse.Namespace) -> int:
    several = len(args.forms) > 1 or len(set(args.runtime or [ONNXRUNTIME])) > 1
    if several and args.roofline:
        raise UserError("--roofline draws one profile: give one form and one --runtime")
    with tempfile.TemporaryDirectory(prefix="graphgen-profile-model-") as tmp:
        columns = _columns(args, Path(tmp))
        if several:
            from graphgen.profiling.comparison import Form, compare

            comparison = compare([Form.of(c.label, c.profile, str(c.path)) for c in columns])
        roof = None
        if args.roofline:
            from graphgen.profiling.calibrate import calibrate

            roof = calibrate(providers(args.device), session_options(args.threads))
    out = sys.stderr if args.json else sys.stdout
    if several:
        from graphgen.profiling.comparison import format_comparison

        if args.json:
            forms = [{"label": c.label} | c.profile.as_dict() for c in columns]
            print(json.dumps({"forms": forms, "comparison": comparison.as_dict()}, indent=2))
        else:
            print(format_comparison(comparison))
        if args.plot:
            from graphgen.profiling.plots import plot_comparison

            print(f"wrote {plot_comparison(comparison, args.plot, args.plot_size)}", file=out)
    else:
        _print_one(args, columns[0].profile, roof, out)
    if args.trace:
        from graphgen.profiling.chrome_trace import write_trace

        written = write_trace(args.trace, [(c.label, c.profile) for c in columns])
        print(f"wrote {written} (Chrome trace events: Perfetto, or DevTools' Performance panel → Load trace)", file=out)
    return 0


def _print_one(args: argparse.Namespace, profile: Profile, roof, out) -> None:
    name = args.forms[0]
    title = f"{name} (batch {args.batch})"
    if args.json:
        extra = {"roof": roof.as_dict()} if roof else {}
        print(json.dumps({"model": name} | profile.as_dict() | extra, indent=2))
    else:
        print(format_profile(profile, name))
        if roof:
            print(f"roof: {roof.peak_gmacs:,.1f} GMAC/s peak, {roof.bandwidth_gbs:,.1f} GB/s ({roof.method})")
    if args.plot:
        print(f"wrote {_plot_layer_times(profile, title, args.plot, args.plot_size)}", file=out)
    if roof is not None:
        from graphgen.profiling.plots import plot_roofline

        print(f"wrote {plot_roofline(profile, roof, args.roofline, args.plot_size, title=title)}", file=out)


def _plot_layer_times(profile: Profile, title: str, path: Path, size: tuple[int, int]) -> Path:
    from graphgen.profiling.plots import ProfileRow, plot_profile

    rows = [
        ProfileRow(r.layer, r.op_types or (r.kernel_op,), profile.figure(r), profile.share(r), r.best.p10, r.best.p90)
        for r in profile.rows
    ]
    spread = f"{profile.spread} over {profile.runs} runs"
    figure = "fastest" if profile.headline == "min" else "median"
    heading = f"{title} on {profile.provider}: {figure} of {profile.runs} runs ({profile.timing_text})"
    return plot_profile(
        rows, path, size, title=heading, inference_us=profile.total_us, spread=spread, notes=profile.notes
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    profile = subparsers.add_parser("profile", help="per-layer time over repeated runs, beside MACs and bytes")
    profile.add_argument(
        "forms",
        nargs="+",
        metavar="FORM",
        help="architecture name or .onnx file, optionally with graphgen convert flags in the same quoted argument "
        "('resnet50 --fp16'); several are compared layer by layer, the first being the baseline",
    )
    profile.add_argument("--batch", type=positive_int, default=1, metavar="N", help="images per run (default 1)")
    profile.add_argument("--warmup", type=count, default=DEFAULT_WARMUP_RUNS, help="uncounted runs first (default 2)")
    profile.add_argument("--json", action="store_true")
    profile.add_argument(
        "--plot", type=plot_path_argument, metavar="PNG", help="per-layer times with their spread (compared: by form)"
    )
    profile.add_argument(
        "--roofline",
        type=plot_path_argument,
        metavar="PNG",
        help="achieved GMAC/s vs arithmetic intensity under this machine's measured roof",
    )
    profile.add_argument(
        "--trace",
        type=trace_path_argument,
        metavar="FILE.json",
        help="every measured run's layers on a timeline, as Chrome trace events (Perfetto, DevTools)",
    )
    add_run_arguments(profile)
    add_runtime_arguments(profile)
    add_build_arguments(profile, batch=False)
    profile.set_defaults(func=cmd_profile)
