"""``graphgen bench PATTERN…``: latency and throughput of architectures on this machine, beside their GMACs.

    graphgen bench resnet18 resnet50 mobilenet_v2 efficientnet_b0 repvgg_a0 vgg16 --deploy [--batch 1,8] [--plot PNG]

The measuring is :mod:`graphgen.profiling.bench`'s; this module parses the flags and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphgen import registry
from graphgen.argtypes import output_file
from graphgen.cli.common import add_run_arguments, add_runtime_arguments, architecture_options
from graphgen.errors import UserError
from graphgen.plots import plot_path_argument
from graphgen.profiling.inprocess import providers, session_options


def _batches(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 1,8; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers; got {text!r}")
    return values


def cmd_bench(args: argparse.Namespace) -> int:
    from graphgen.profiling.bench import bench_architecture, format_table, to_csv

    names = registry.expand(args.names)
    variant = architecture_options(args)
    runtimes = list(dict.fromkeys(args.runtime or ["onnxruntime"]))
    if "openvino" in runtimes:
        from graphgen.profiling import openvino

        if args.device != "cpu":
            raise UserError("--runtime openvino runs on OpenVINO's CPU plugin: use --device cpu")
        if (reason := openvino.unavailable_reason()) is not None:
            raise UserError(f"--runtime openvino: {reason}")
    rows = []
    for name in names:
        rows += bench_architecture(
            name,
            args.batch,
            runs=args.runs,
            variant=variant,
            providers=providers(args.device, args.cudnn_conv_algo_search),
            make_options=session_options(args.threads),
            runtimes=runtimes,
            threads=args.threads,
            openvino_precision=args.openvino_precision,
        )
        print(f"  {name}: done", file=sys.stderr)
    print(format_table(rows))
    if args.csv:
        Path(args.csv).write_text(to_csv(rows))
        print(f"wrote {args.csv}")
    if args.plot:
        from graphgen.profiling.plots import plot_bench

        print(f"wrote {plot_bench(rows, args.plot, args.plot_size)}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="latency and throughput of architectures on this machine")
    bench.add_argument("names", nargs="+", metavar="PATTERN", help="architectures, or patterns such as 'resnet*'")
    bench.add_argument("--batch", type=_batches, default=[1], metavar="N[,N…]", help="batch sizes (default 1)")
    bench.add_argument("--csv", type=output_file, metavar="FILE", help="also write timm's benchmark-infer CSV columns")
    bench.add_argument("--plot", type=plot_path_argument, metavar="PNG", help="latency vs GMACs")
    bench.add_argument(
        "--deploy", action="store_true", default=None, help="RepVGG/ParNet: the deploy form (others unaffected)"
    )
    add_run_arguments(bench)
    add_runtime_arguments(bench)
    bench.set_defaults(func=cmd_bench)
