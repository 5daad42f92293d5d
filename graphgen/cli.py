"""``graphgen`` command line: list, build, stats (and the commands other modules add).

User mistakes (unknown architecture, unreadable or unfitting checkpoint, bad option) print one
clear message to stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from graphgen import __version__, registry
from graphgen.metadata import SCALING
from graphgen.plots import DEFAULT_SIZE, plot_path_argument, size_argument

EXIT_USAGE = 2


class UserError(Exception):
    """A mistake in what the user asked for: reported as a message, exit 2."""


class Progress:
    """A one-line progress bar on stderr, shown only on a terminal so logs stay clean."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done, self.start = total, label, 0, time.perf_counter()
        self.enabled = sys.stderr.isatty()

    def step(self, what: str) -> None:
        self.done += 1
        if self.enabled:
            filled = round(20 * self.done / self.total)
            elapsed = time.perf_counter() - self.start
            print(
                f"\r{self.label} [{'#' * filled}{'.' * (20 - filled)}] {what:<24} {elapsed:5.1f}s",
                end="",
                file=sys.stderr,
            )
            if self.done == self.total:
                print(file=sys.stderr)


def positive_or_dynamic(text: str) -> int | None:
    if text == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'dynamic', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'dynamic', got {text!r}")
    return value


def opset_version(text: str) -> int:
    """``--opset N``: an ONNX opset graphgen can write (checked here, so the error names the flag)."""
    from graphgen.passes.opset import MAX_OPSET, MIN_OPSET

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an opset number, got {text!r}") from None
    if not MIN_OPSET <= value <= MAX_OPSET:
        raise argparse.ArgumentTypeError(f"graphgen writes opsets {MIN_OPSET} to {MAX_OPSET}, not {value}")
    return value


def positive_int(text: str) -> int:
    value = positive_or_dynamic(text)
    if value is None:
        raise argparse.ArgumentTypeError("expected a positive integer")
    return value


def count_parameters(arch: registry.Architecture, num_classes: int = 1000) -> int:
    """Parameters as torch counts them, from the module tree alone (nothing is traced)."""
    from graphgen.nn import Parameter

    module = arch.make(num_classes)
    return sum(_numel(p.shape) for _, p in module.named_parameters() if isinstance(p, Parameter) and p.trainable)


def _numel(shape) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def cmd_list(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = [
        {
            "name": arch.name,
            "family": arch.family,
            "parameters": count_parameters(arch),
            "resolution": arch.resolution,
            "reference": arch.reference,
            "options": [f"--{option}" for option in arch.options],
            "description": arch.description,
        }
        for arch in registry.architectures()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    print(f"{'name':<{width}}  {'family':<18}  {'parameters':>13}  {'res':>4}  description")
    for row in rows:
        print(
            f"{row['name']:<{width}}  {row['family']:<18}  {row['parameters']:>13,}  {row['resolution']:>4}  {row['description']}"
        )
    return 0


def _build_options(args: argparse.Namespace):
    from graphgen.build import BuildOptions

    batch = args.batch if args.command == "build" else None  # stats: --batch sizes the figures
    variant = {key: getattr(args, key) for key in VARIANT_OPTIONS if getattr(args, key) not in (None, False)}
    return BuildOptions(
        num_classes=args.num_classes, resolution=args.resolution, batch=batch,
        keep_bn=args.keep_bn, seed=args.seed, weights=args.weights, variant=variant,
        functions=getattr(args, "functions", False), opset=getattr(args, "opset", None),
    )  # fmt: skip


def cmd_build(args: argparse.Namespace) -> int:
    from graphgen.build import build, save

    registry.get(args.name)  # unknown names fail before any work
    if not args.output and not args.repository:
        raise UserError("say where to write the model: -o FILE or --repository DIR")
    progress = Progress(2, f"building {args.name}")
    model = build(args.name, _build_options(args))
    progress.step("traced, weights filled")
    targets = [Path(args.output)] if args.output else []
    if args.repository:
        targets.append(Path(args.repository) / (args.model_name or args.name) / str(args.model_version) / "model.onnx")
    for target in targets:
        save(model, target)
    progress.step("saved")
    params = sum(v.const_value.size for v in model.graph.initializers.values() if v.const_value is not None)
    for target in targets:
        print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB, {len(model.graph)} nodes, {params:,} weights)")
    return 0


def _load_model(source: str, args: argparse.Namespace):
    """An architecture name is built (with the given options); anything else is read as an ONNX file."""
    from graphgen.build import build
    from graphgen.onnx_io import load_model

    if source in registry.names():
        return build(source, _build_options(args))
    path = Path(source)
    if path.suffix != ".onnx" and not path.exists():
        registry.get(source)  # raises "unknown architecture ... did you mean"
    return load_model(path)


def cmd_stats(args: argparse.Namespace) -> int:
    from graphgen.stats import format_table, layer_stats, summary

    model = _load_model(args.name, args)
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


def _add_build_options(parser: argparse.ArgumentParser, batch: bool = True) -> None:
    parser.add_argument("--weights", metavar="PATH", help="checkpoint to load (.pth, .safetensors, .npz)")
    parser.add_argument("--num-classes", type=positive_int, metavar="N", help="new classifier head with N classes")
    parser.add_argument("--resolution", type=positive_int, metavar="R", help="input height and width")
    if batch:
        parser.add_argument(
            "--batch",
            type=positive_or_dynamic,
            default=None,
            metavar="N|dynamic",
            help="batch dimension (default: dynamic)",
        )
    parser.add_argument("--keep-bn", action="store_true", help="emit BatchNormalization nodes instead of folding them")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (default 0)")
    parser.add_argument(
        "--functions", action="store_true", help="emit each block as an ONNX local function (Netron: a chain of blocks)"
    )
    parser.add_argument(
        "--opset", type=opset_version, metavar="N", help="write ONNX opset N, 13 to 21 (default 21), for older runtimes"
    )
    variant = parser.add_argument_group(
        "architecture options (each architecture takes some; 'graphgen list' shows which)"
    )
    variant.add_argument("--phi", type=float, help="EfficientNet compound-scaling coefficient (any real >= 0)")
    variant.add_argument("--width", type=float, help="width multiplier (MobileNets)")
    variant.add_argument("--deploy", action="store_true", help="RepVGG/ParNet: natively built single-branch form")
    variant.add_argument(
        "--form", choices=["grouped", "branches"], help="ResNeXt: grouped convolution or G parallel branches"
    )
    variant.add_argument(
        "--aux", action="store_true", help="Inception/GoogLeNet: add the auxiliary heads as extra outputs"
    )
    variant.add_argument("--activation", choices=["relu", "silu"], help="ParNet activation")


VARIANT_OPTIONS = ("phi", "width", "deploy", "form", "aux", "activation")


# Modules that add subcommands: each exposes add_parser(subparsers) setting `func`.
EXTRA_COMMANDS: list[str] = ["graphgen.compare", "graphgen.convert", "graphgen.view", "graphgen.profiling.commands"]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphgen", description="Classic CNN architectures, straight into ONNX.")
    parser.add_argument("--version", action="version", version=f"graphgen {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list the architectures")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    building = commands.add_parser("build", help="build an architecture into an ONNX file")
    building.add_argument("name")
    building.add_argument("-o", "--output", metavar="FILE")
    building.add_argument("--repository", metavar="DIR", help="also write DIR/<model>/<version>/model.onnx")
    building.add_argument("--model-name", help="model name in the repository (default: the architecture)")
    building.add_argument("--model-version", type=positive_int, default=1)
    _add_build_options(building)
    building.set_defaults(func=cmd_build)

    stats = commands.add_parser("stats", help="per-layer parameters, MACs/FLOPs, activations and memory")
    stats.add_argument("name", help="architecture name or .onnx file")
    stats.add_argument(
        "--batch", type=positive_int, default=1, metavar="N", help="batch size of the figures (default 1)"
    )
    stats.add_argument("--json", action="store_true")
    stats.add_argument(
        "--plot",
        type=plot_path_argument,
        metavar="PNG",
        help="also draw parameters, FLOPs and activation memory per layer",
    )
    stats.add_argument(
        "--plot-size", type=size_argument, default=DEFAULT_SIZE, metavar="WxH", help="picture size (default 1600x1000)"
    )
    _add_build_options(stats, batch=False)
    stats.set_defaults(func=cmd_stats)

    for module_name in EXTRA_COMMANDS:
        __import__(module_name, fromlist=["add_parser"]).add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from graphgen.checkpoint import CheckpointError

    parser = make_parser()
    args = parser.parse_args(argv)
    handled: tuple[type[BaseException], ...] = (
        UserError,
        registry.UnknownArchitectureError,
        CheckpointError,
        ValueError,
        OSError,
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except handled as error:
        message = error.message if isinstance(error, registry.UnknownArchitectureError) else str(error)
        print(f"graphgen: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
