"""``graphgen compare NAME|FILE… [--plot out.png]``: architectures and .onnx files side by side.

Parameters, MACs and input resolution of each, as a table and optionally as a chart (parameters
vs MACs, log-log). Names may be shell-style patterns (``'efficientnet_b?'``); a path ending in
.onnx is read as a model file. Architectures are not built: MACs and parameters need only the
shapes of a traced graph, so comparing the whole EfficientNet family takes seconds.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import onnx_ir as ir

from graphgen import registry
from graphgen.metadata import FAMILY
from graphgen.plots import DEFAULT_SIZE, ArchPoint, plot_path_argument, size_argument


def measure(name: str) -> ArchPoint:
    """Parameters (as torch counts them) and MACs at batch 1: of an architecture at its default
    resolution (traced, weights not drawn), or of an .onnx file at its own."""
    from graphgen.build import IR_VERSION, trace
    from graphgen.onnx_io import load_model
    from graphgen.stats import count_parameters, layer_stats

    if name.lower().endswith(".onnx"):
        model = load_model(Path(name))
        family = model.metadata_props.get(FAMILY, "onnx file")
        shape = model.graph.inputs[0].shape if model.graph.inputs else None
        resolution = shape[-1] if shape is not None and isinstance(shape[-1], int) else 0
    else:
        arch = registry.get(name)
        network = arch.network()
        resolution = network.resolution or arch.resolution
        model = ir.Model(trace(network, name, resolution, batch=1), ir_version=IR_VERSION)
        family = arch.family
    params = count_parameters(model).parameters
    return ArchPoint(name, family, params, layer_stats(model, batch=1).macs, resolution)


def format_points(points: list[ArchPoint]) -> str:
    width = max([len("name"), *(len(p.name) for p in points)])
    lines = [f"{'name':<{width}}  {'family':<16}  {'res':>4}  {'parameters':>13}  {'GMACs':>8}  {'MACs/param':>10}"]
    for p in points:
        reuse = f"{p.macs / p.params:,.0f}" if p.params else "-"  # MACs each weight takes part in
        lines.append(
            f"{p.name:<{width}}  {p.family:<16}  {p.resolution:>4}  {p.params:>13,}  {p.macs / 1e9:>8.3f}  {reuse:>10}"
        )
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    points = [measure(name) for name in registry.expand(args.names)]
    if args.json:
        print(json.dumps([asdict(p) for p in points], indent=2))
    else:
        print(format_points(points))
    if args.plot:
        from graphgen.plots import plot_compare

        print(f"wrote {plot_compare(points, args.plot, args.plot_size)}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="parameters vs MACs of several architectures or .onnx files (table, chart)"
    )
    parser.add_argument(
        "names", nargs="+", metavar="NAME|FILE", help="architectures, patterns such as 'resnet*', or .onnx files"
    )
    parser.add_argument(
        "--plot", type=plot_path_argument, metavar="PNG", help="also draw parameters vs MACs to this PNG"
    )
    parser.add_argument(
        "--plot-size", type=size_argument, default=DEFAULT_SIZE, metavar="WxH", help="picture size (default 1600x1000)"
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=cmd_compare)
