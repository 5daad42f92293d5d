"""``graphgen compare NAME… [--plot out.png]``: architectures side by side.

Parameters, MACs and default resolution of each architecture, as a table and optionally as a
chart (parameters vs MACs, log-log). Names may be shell-style patterns (``'efficientnet_b?'``).
Nothing is built: MACs need only the shapes of a traced graph, and parameters come from the
module tree, so comparing the whole EfficientNet family takes about a second.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from dataclasses import asdict

import onnx_ir as ir

from graphgen import registry
from graphgen.plots import DEFAULT_SIZE, ArchPoint, plot_path_argument, size_argument


def expand(patterns: list[str]) -> list[str]:
    """Registered names matching each pattern, in registry order per pattern, without repeats."""
    names, known = [], registry.names()
    for pattern in patterns:
        matches = fnmatch.filter(known, pattern) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise ValueError(f"no architecture matches {pattern!r}")
        for name in matches:
            registry.get(name)  # an unknown plain name fails here, with "did you mean"
            if name not in names:
                names.append(name)
    return names


def measure(name: str) -> ArchPoint:
    """Parameters (as torch counts them) and MACs at the default resolution, from a traced graph."""
    from graphgen.build import IR_VERSION, trace
    from graphgen.cli import count_parameters
    from graphgen.stats import layer_stats

    arch = registry.get(name)
    module = arch.make(arch.num_classes)
    resolution = getattr(module, "default_resolution", arch.resolution)
    params = count_parameters(arch)
    graph = trace(module, name, resolution, batch=1)
    macs = layer_stats(ir.Model(graph, ir_version=IR_VERSION), batch=1).macs
    return ArchPoint(name, arch.family, params, macs, resolution)


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
    points = [measure(name) for name in expand(args.names)]
    if args.json:
        print(json.dumps([asdict(p) for p in points], indent=2))
    else:
        print(format_points(points))
    if args.plot:
        from graphgen.plots import plot_compare

        print(f"wrote {plot_compare(points, args.plot, args.plot_size)}")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="parameters vs MACs of several architectures (table, chart)")
    parser.add_argument("names", nargs="+", metavar="NAME", help="architectures, or patterns such as 'resnet*'")
    parser.add_argument(
        "--plot", type=plot_path_argument, metavar="PNG", help="also draw parameters vs MACs to this PNG"
    )
    parser.add_argument(
        "--plot-size", type=size_argument, default=DEFAULT_SIZE, metavar="WxH", help="picture size (default 1600x1000)"
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=cmd_compare)
