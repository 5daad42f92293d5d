"""``graphgen list``, ``graphgen build`` and ``graphgen stats``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from graphgen import registry
from graphgen.argtypes import positive_int
from graphgen.cli.common import Progress, add_build_arguments, build_options, model_from, output_path
from graphgen.errors import UserError
from graphgen.metadata import SCALING
from graphgen.plots import DEFAULT_SIZE, plot_path_argument, size_argument

MIB = 1024**2


def cmd_list(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = [
        {
            "name": arch.name,
            "family": arch.family,
            "parameters": arch.reference_params,
            "resolution": arch.resolution,
            "reference": arch.reference,
            "options": [option.usage for option in arch.options],
            "description": arch.description,
        }
        for arch in registry.architectures()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    print(f"{'name':<{width}}  {'family':<18}  {'parameters':>13}  {'res':>4}  {'options':<34}  description")
    for row in rows:
        params = f"{row['parameters']:,}" if row["parameters"] is not None else "-"
        options = " ".join(row["options"])
        print(
            f"{row['name']:<{width}}  {row['family']:<18}  {params:>13}  {row['resolution']:>4}  {options:<34}  "
            f"{row['description']}"
        )
    print("parameters: the reference implementation's, as torch counts them (BatchNorm statistics excluded)")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from graphgen.build import build, save
    from graphgen.stats import count_parameters

    registry.get(args.name)  # unknown names fail before any work
    if not args.output and not args.repository:
        raise UserError("say where to write the model: -o FILE or --repository DIR")
    targets = [output_path(args.output, create_folder=args.mkdir)] if args.output else []
    if args.repository:
        folder = Path(args.repository) / (args.model_name or args.name) / str(args.model_version)
        if not Path(args.repository).is_dir():
            raise UserError(f"the repository {args.repository} is not a folder (create it first)")
        targets.append(output_path(str(folder / "model.onnx"), create_folder=True))  # inside an existing repository
    progress = Progress(2, f"building {args.name}")
    model = build(args.name, build_options(args))
    progress.step("traced, weights filled")
    for target in targets:
        save(model, target)
    progress.step("saved")
    count = count_parameters(model)
    for target in targets:
        size = target.stat().st_size / MIB
        print(f"wrote {target} ({size:,.1f} MiB, {len(model.graph)} nodes, {count.describe()})")
    return 0


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

        written = plot_layer_stats(stats, output_path(str(args.plot), create_folder=args.mkdir), args.plot_size)
        print(f"wrote {written}", file=sys.stderr if args.json else sys.stdout)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    listing = subparsers.add_parser("list", help="list the architectures and the options each takes")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    building = subparsers.add_parser("build", help="build an architecture into an ONNX file")
    building.add_argument("name")
    building.add_argument("-o", "--output", metavar="FILE")
    building.add_argument("--repository", metavar="DIR", help="also write DIR/<model>/<version>/model.onnx")
    building.add_argument("--model-name", help="model name in the repository (default: the architecture)")
    building.add_argument("--model-version", type=positive_int, default=1)
    building.add_argument("--mkdir", action="store_true", help="create the folder of -o FILE if it does not exist")
    add_build_arguments(building)
    building.set_defaults(func=cmd_build)

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
    stats.add_argument("--mkdir", action="store_true", help="create the folder of --plot PNG if it does not exist")
    add_build_arguments(stats, batch=False)
    stats.set_defaults(func=cmd_stats)
