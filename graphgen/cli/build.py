"""``graphgen build NAME -o FILE``: an architecture straight into an ONNX file (or a model repository)."""

from __future__ import annotations

import argparse
from pathlib import Path

from graphgen import registry
from graphgen.argtypes import output_file, positive_int
from graphgen.cli.common import Progress, add_build_arguments, build_options
from graphgen.errors import UserError
from graphgen.metadata import random_weights_note

MIB = 1024**2


def cmd_build(args: argparse.Namespace) -> int:
    from graphgen.build import build, save
    from graphgen.stats import count_parameters

    registry.get(args.name)  # unknown names fail before any work
    if not args.output and not args.repository:
        raise UserError("say where to write the model: -o FILE or --repository DIR")
    targets = [args.output] if args.output else []
    if args.repository:
        if not Path(args.repository).is_dir():
            raise UserError(f"the repository {args.repository} is not a folder; create it first")
        # The repository's layout, <model>/<version>/model.onnx, is made inside it (the server's layout).
        targets.append(Path(args.repository) / (args.model_name or args.name) / str(args.model_version) / "model.onnx")
    progress = Progress(2, f"building {args.name}")
    model = build(args.name, build_options(args))
    progress.step("traced, weights filled")
    for target in targets:
        save(model, target)
    progress.step("saved")
    count = count_parameters(model)
    weights = random_weights_note(model.metadata_props)  # said, or a server's answers look meaningful
    for target in targets:
        size = target.stat().st_size / MIB
        facts = [f"{size:,.1f} MiB", f"{len(model.graph)} nodes", count.describe()]
        print(f"wrote {target} ({', '.join(facts)})" + (f"; {weights}" if weights else ""))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    building = subparsers.add_parser(
        "build",
        help="build an architecture into an ONNX file",
        description="Build an architecture straight into ONNX: random (seeded) or checkpoint weights, BatchNorm folded "
        "unless --keep-bn, self-describing metadata. The architecture options below apply where `graphgen list` "
        "shows them.",
    )
    building.add_argument("name", help="architecture name (see `graphgen list`)")
    building.add_argument(
        "-o", "--output", type=output_file, metavar="FILE", help="the ONNX file to write (this or --repository)"
    )
    building.add_argument("--repository", metavar="DIR", help="also write DIR/<model>/<version>/model.onnx")
    building.add_argument("--model-name", help="model name in the repository (default: the architecture)")
    building.add_argument(
        "--model-version", type=positive_int, default=1, help="version directory in the repository (default 1)"
    )
    add_build_arguments(building)
    building.set_defaults(func=cmd_build)
