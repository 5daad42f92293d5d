"""``graphgen profile NAME|FILE``: per-layer time over repeated runs, beside MACs and bytes, in-process.

    graphgen profile resnet50 [--batch 8] [--runs 10] [--device cpu|cuda] [--json] [--plot PNG] [--roofline PNG]

No server needed: the same profiler core the server uses (:mod:`graphgen.profiling.session`),
through :mod:`graphgen.profiling.inprocess`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from graphgen.argtypes import count, positive_int
from graphgen.cli.common import add_build_arguments, add_run_arguments, model_file
from graphgen.plots import plot_path_argument
from graphgen.profiling.inprocess import format_profile, profile_model, providers, session_options
from graphgen.profiling.session import DEFAULT_WARMUP_RUNS
from graphgen.profiling.summary import Profile


def cmd_profile(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="graphgen-profile-model-") as tmp:
        path = model_file(args.name, args, Path(tmp))
        profile = profile_model(
            path, args.batch, args.runs, args.warmup, args.device, args.threads, args.cudnn_conv_algo_search
        )
        roof = None
        if args.roofline:
            from graphgen.profiling.calibrate import calibrate

            roof = calibrate(providers(args.device), session_options(args.threads))
    title = f"{args.name} (batch {args.batch})"
    out = sys.stderr if args.json else sys.stdout
    if args.json:
        print(
            json.dumps({"model": args.name} | profile.as_dict() | ({"roof": roof.as_dict()} if roof else {}), indent=2)
        )
    else:
        print(format_profile(profile, args.name))
        if roof:
            print(f"roof: {roof.peak_gmacs:,.1f} GMAC/s peak, {roof.bandwidth_gbs:,.1f} GB/s ({roof.method})")
    if args.plot:
        print(f"wrote {_plot_layer_times(profile, title, args.plot, args.plot_size)}", file=out)
    if roof is not None:
        from graphgen.profiling.plots import plot_roofline

        print(f"wrote {plot_roofline(profile, roof, args.roofline, args.plot_size, title=title)}", file=out)
    return 0


def _plot_layer_times(profile: Profile, title: str, path: Path, size: tuple[int, int]) -> Path:
    from graphgen.profiling.plots import ProfileRow, plot_profile

    rows = [
        ProfileRow(r.layer, r.op_types or (r.kernel_op,), r.best.median, profile.share(r), r.best.p10, r.best.p90)
        for r in profile.rows
    ]
    spread = f"{profile.spread} over {profile.runs} runs"
    heading = f"{title} on {profile.provider}: median of {profile.runs} runs ({profile.timing_text})"
    return plot_profile(rows, path, size, title=heading, inference_us=profile.total_us, spread=spread)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    profile = subparsers.add_parser("profile", help="per-layer time over repeated runs, beside MACs and bytes")
    profile.add_argument("name", help="architecture name or .onnx file")
    profile.add_argument("--batch", type=positive_int, default=1, metavar="N", help="images per run (default 1)")
    profile.add_argument("--warmup", type=count, default=DEFAULT_WARMUP_RUNS, help="uncounted runs first (default 2)")
    profile.add_argument("--json", action="store_true")
    profile.add_argument("--plot", type=plot_path_argument, metavar="PNG", help="per-layer times with their spread")
    profile.add_argument(
        "--roofline",
        type=plot_path_argument,
        metavar="PNG",
        help="achieved GMAC/s vs arithmetic intensity under this machine's measured roof",
    )
    add_run_arguments(profile)
    add_build_arguments(profile, batch=False)
    profile.set_defaults(func=cmd_profile)
