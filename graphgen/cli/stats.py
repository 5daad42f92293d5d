"""``graphgen stats NAME|FILE``: per-layer parameters, MACs/FLOPs, activations and memory (table, JSON, chart)."""

from __future__ import annotations

import argparse
import json
import sys

from graphgen.argtypes import positive_int
from graphgen.cli.common import add_build_arguments, model_from
from graphgen.metadata import SCALING
from graphgen.plots import DEFAULT_SIZE, plot_path_argument, size_argument


def cmd_stats(args: argparse.Namespace) -> int:
    from graphgen.stats import format_table, layer_stats, summary

    model = model_from(args.name, args)
    stats = layer_stats(model, args.batch)
    scaling = model.metadata_props.get(SCALING)  # EfficientNet: φ / released-table multipliers
    if args.json:
        print(json.dumps(stats.as_dict() | ({"scaling": scaling} if scaling else {}), indent=2))
    else:
        print(format_table(stats))
        print(summary(stats))
        if scaling:
            print(f"scaling: {scaling}")
    if args.plot:
        from graphgen.plots import plot_layer_stats

        written = plot_layer_stats(stats, args.plot, args.plot_size)
        print(f"wrote {written}", file=sys.stderr if args.json else sys.stdout)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    stats = subparsers.add_parser("stats", help="per-layer parameters, MACs/FLOPs, activations and memory")
    stats.add_argument("name", help="architecture name or .onnx file")
    stats.add_argument(
        "--batch", type=positive_int, default=1, metavar="N", help="batch size of the figures (default 1)"
    )
    stats.add_argument("--json", action="store_true")
    stats.add_argument(
        "--plot", type=plot_path_argument, metavar="PNG", help="also draw parameters, FLOPs and activation memory"
    )
    stats.add_argument(
        "--plot-size", type=size_argument, default=DEFAULT_SIZE, metavar="WxH", help="picture size (default 1600x1000)"
    )
    add_build_arguments(stats, batch=False)
    stats.set_defaults(func=cmd_stats)
