"""What graphgen's commands share: the build flags (generated from the architectures' options),
reading a model given by name or file, output paths, and the progress bar.

Heavy modules (the registry's families, onnx_ir) are imported inside the functions that need
them, so that importing this module costs nothing at start-up.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from graphgen.argtypes import count, opset_version, positive_int, positive_or_dynamic

if TYPE_CHECKING:
    import onnx_ir as ir

    from graphgen.architecture import Option
    from graphgen.build import BuildOptions


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
            bar = f"[{'#' * filled}{'.' * (20 - filled)}]"
            print(f"\r{self.label} {bar} {what:<24} {elapsed:5.1f}s", end="", file=sys.stderr)
            if self.done == self.total:
                print(file=sys.stderr)


CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")  # the CUDA provider's cudnn_conv_algo_search


def add_build_arguments(parser: argparse.ArgumentParser, batch: bool = True) -> None:
    """The flags of a build: weights, classes, resolution, form, and every architecture option."""
    from graphgen import registry

    parser.add_argument("--weights", metavar="PATH", help="checkpoint to load (.pth, .safetensors, .npz)")
    parser.add_argument("--num-classes", type=positive_int, metavar="N", help="new classifier head with N classes")
    parser.add_argument("--resolution", type=positive_int, metavar="R", help="input height and width")
    if batch:
        parser.add_argument(
            "--batch", type=positive_or_dynamic, metavar="N|dynamic", help="batch dimension (default: dynamic)"
        )
    parser.add_argument("--keep-bn", action="store_true", help="emit BatchNormalization nodes instead of folding them")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (default 0)")
    parser.add_argument(
        "--functions", action="store_true", help="emit each block as an ONNX local function (Netron: a chain of blocks)"
    )
    parser.add_argument(
        "--opset", type=opset_version, metavar="N", help="write ONNX opset N, 13 to 21 (default 21), for older runtimes"
    )
    group = parser.add_argument_group(
        "architecture options (each architecture takes some; 'graphgen list' shows which)"
    )
    for option in registry.all_options().values():
        add_option(group, option)


def add_option(group: argparse._ArgumentGroup | argparse.ArgumentParser, option: Option) -> None:
    """``option`` as a flag; absent, it is None (the architecture's default applies)."""
    if option.type is bool:
        group.add_argument(option.flag, dest=option.name, action="store_true", default=None, help=option.help)
        return
    default = f" (default {option.default})"
    if option.choices:
        group.add_argument(option.flag, dest=option.name, choices=option.choices, help=option.help + default)
        return

    def typed(text: str) -> object:
        try:
            return option.type(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {option.type.__name__}, got {text!r}") from None

    typed.__name__ = option.type.__name__  # argparse names the type in its messages
    metavar = option.type.__name__.upper()
    group.add_argument(option.flag, dest=option.name, type=typed, metavar=metavar, help=option.help + default)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of commands that run models here (profile, bench): runs, device, threads, picture size."""
    from graphgen.plots import DEFAULT_SIZE, size_argument
    from graphgen.profiling.session import DEFAULT_RUNS

    parser.add_argument(
        "--runs", type=positive_int, default=DEFAULT_RUNS, help=f"measured runs (default {DEFAULT_RUNS})"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="execution provider (default cpu)")
    parser.add_argument(
        "--threads",
        type=count,
        default=0,
        help="intra-op threads (0: the runtime's default, one per core, pinned; N: N threads, not pinned)",
    )
    parser.add_argument(
        "--cudnn-conv-algo-search",
        choices=CONV_ALGO_SEARCHES,
        default="EXHAUSTIVE",
        help="--device cuda: how cuDNN picks convolution algorithms (default EXHAUSTIVE, as graphgen-server; "
        "HEURISTIC picks the same ones every time, for comparing two profiles)",
    )
    parser.add_argument("--plot-size", type=size_argument, default=DEFAULT_SIZE, metavar="WxH", help="in pixels")


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """``--runtime`` (repeatable) and OpenVINO's precision, for the commands that run models here."""
    from graphgen.profiling.inprocess import RUNTIMES
    from graphgen.profiling.openvino import DEFAULT_PRECISION, PRECISIONS

    parser.add_argument(
        "--runtime",
        action="append",
        choices=RUNTIMES,
        help="onnxruntime (default) or openvino (pip install 'graphgen-onnx[openvino]'); repeat to compare them",
    )
    parser.add_argument(
        "--openvino-precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help=f"OpenVINO's INFERENCE_PRECISION_HINT (default {DEFAULT_PRECISION}, as onnxruntime computes; "
        "'default': the CPU plugin's own, bf16 where the CPU has it)",
    )


def architecture_options(args: argparse.Namespace) -> dict[str, object]:
    """The architecture options given on the command line (absent ones are left to the architecture)."""
    from graphgen import registry

    return {name: value for name in registry.all_options() if (value := getattr(args, name, None)) is not None}


def build_options(args: argparse.Namespace) -> BuildOptions:
    """What the build flags ask for (see :func:`add_build_arguments`)."""
    from graphgen.build import BuildOptions

    return BuildOptions(
        num_classes=args.num_classes,
        resolution=args.resolution,
        batch=args.batch if args.command == "build" else None,  # stats, profile: --batch sizes the figures
        keep_bn=args.keep_bn,
        seed=args.seed,
        weights=args.weights,
        variant=architecture_options(args),
        functions=args.functions,
        opset=args.opset,
    )


def model_file(source: str, args: argparse.Namespace, directory: Path) -> Path:
    """An .onnx file: ``source`` itself (checked to be a readable model), or the architecture built into ``directory``."""
    from graphgen import registry
    from graphgen.build import build, save
    from graphgen.onnx_io import check_model_file

    if source in registry.names():
        return save(build(source, build_options(args)), directory / f"{source}.onnx")
    path = Path(source)
    if path.suffix != ".onnx" and not path.exists():
        registry.get(source)  # raises "unknown architecture ... did you mean"
    check_model_file(path)  # refuses what is not an ONNX model, or reaches outside its directory
    return path


def model_from(source: str, args: argparse.Namespace) -> ir.Model:
    """An architecture name is built (with the given build flags); anything else is read as an .onnx file."""
    from graphgen import registry
    from graphgen.build import build
    from graphgen.onnx_io import load_model

    if source in registry.names():
        return build(source, build_options(args))
    path = Path(source)
    if path.suffix != ".onnx" and not path.exists():
        registry.get(source)  # raises "unknown architecture ... did you mean"
    return load_model(path)
