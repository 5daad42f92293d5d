"""``graphgen profile NAME|FILE`` and ``graphgen bench PATTERN…``: profiles and benchmarks in-process.

    graphgen profile resnet50 [--batch 8] [--runs 10] [--device cpu|cuda] [--json] [--plot PNG] [--roofline PNG]
    graphgen bench resnet18 resnet50 mobilenet_v2 efficientnet_b0 repvgg_a0 vgg16 --deploy [--batch 1,8] [--plot PNG]

No server needed: the same profiler core the server uses (:mod:`graphgen.profiling.session`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from graphgen.argtypes import count, output_file, positive_int
from graphgen.cli.common import add_build_arguments, architecture_options, model_file
from graphgen.errors import UserError
from graphgen.plots import DEFAULT_SIZE, plot_path_argument, size_argument
from graphgen.profiling.session import CUDA, DEFAULT_RUNS, DEFAULT_WARMUP_RUNS, ModelProfiler
from graphgen.profiling.summary import Profile

CPU = "CPUExecutionProvider"


def _batches(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 1,8; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers; got {text!r}")
    return values


def _providers(device: str) -> list:
    if device == "cpu":
        return [CPU]
    if CUDA not in ort.get_available_providers():
        raise UserError(f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDA execution provider")
    return [(CUDA, {}), CPU]


def _options_for(threads: int):
    def make() -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # As graphgen-server: idle threads sleep, so another process's work is not slowed by ours.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        return options

    return make


def profile_model(path: Path, batch: int, runs: int, warmup_runs: int, device: str, threads: int) -> Profile:
    """Profile the model file at ``path`` on random input of ``batch`` images."""
    profiler = ModelProfiler(path, _providers(device), _options_for(threads))
    try:
        session = profiler.build()
        if device == "cuda" and session.provider != CUDA:
            raise UserError(f"--device cuda: onnxruntime could not start CUDA and ran on {session.provider}")
        first = session.session.get_inputs()[0]
        if first.type != "tensor(float)" and first.type != "tensor(float16)":
            raise UserError(f"{path}: the first input is {first.type}; graphgen profiles float image models")
        shape = [d if isinstance(d, int) and d > 0 else batch for d in first.shape]
        shape[0] = batch
        dtype = np.float16 if first.type == "tensor(float16)" else np.float32
        feeds = {first.name: np.random.default_rng(0).standard_normal(shape).astype(dtype)}
        _, profile = session.measure(feeds, runs, warmup_runs)
        return profile
    finally:
        profiler.close()


def format_profile(profile: Profile, title: str) -> str:
    """The profile joined with the static table, one row per kernel in execution order."""
    device = profile.timing == "device"
    total_macs = sum(r.macs for r in profile.rows) or 1
    width = min(max([len(r.layer) for r in profile.rows] + [5]), 48)
    lines = [
        f"{title}: {profile.runs} runs of a batch of {profile.batch} after {profile.warmup_runs} warm-up runs on "
        f"{profile.provider}; times: {profile.timing_text}",
        f"{'layer':<{width}}  {'kind':<14}  {'median µs':>10}  {profile.spread + ' µs':>17}  {'time':>6}  {'MACs':>6}"
        f"  {'params':>10}  {'MMACs':>8}  {'act KiB':>8}  {'GMAC/s':>7}  {'GB/s':>6}"
        + (f"  {'launch µs':>9}" if device else ""),
    ]
    for row in profile.rows:
        t = row.best
        layer = row.layer if len(row.layer) <= width else row.layer[: width - 1] + "…"
        kind = row.kind or ("+".join(row.op_types) if row.mapped else row.kernel_op)
        rate = f"{row.macs / t.median / 1e3:7.2f}" if row.macs and t.median else f"{'':>7}"
        bandwidth = f"{row.bytes / t.median / 1e3:6.2f}" if row.bytes and t.median else f"{'':>6}"
        line = (
            f"{layer:<{width}}  {kind[:14]:<14}  {t.median:>10.1f}  {f'{t.p10:.1f}–{t.p90:.1f}':>17}"
            f"  {profile.share(row) * 100:5.1f}%  {row.macs / total_macs * 100:5.1f}%  {row.params:>10,}"
            f"  {row.macs / 1e6:>8.1f}  {row.activation_bytes / 1024:>8.0f}  {rate}  {bandwidth}"
        )
        lines.append(line + (f"  {row.time.median:>9.1f}" if device else ""))
    total = "GPU run (CUDA events)" if device else "median run"
    lines.append(
        f"layers {profile.layers_us:,.0f} µs + overhead {profile.overhead_us:,.0f} µs = {total} "
        f"{profile.total_us:,.0f} µs (whole runs {profile.run.p10:,.0f}–{profile.run.p90:,.0f} µs, {profile.spread}); "
        f"rows add up within {profile.add_up_error:.1%}"
    )
    lines.append(
        f"profiling session: built in {profile.build_us / 1e3:.1f} ms, warm-up {profile.setup_us / 1e3:.1f} ms "
        "(neither counted in the rows)"
    )
    lines.extend(f"note: {note}" for note in profile.notes)
    return "\n".join(lines)


def cmd_profile(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="graphgen-profile-model-") as tmp:
        path = model_file(args.name, args, Path(tmp))
        profile = profile_model(path, args.batch, args.runs, args.warmup, args.device, args.threads)
        roof = None
        if args.roofline:
            from graphgen.profiling.calibrate import calibrate

            roof = calibrate(_providers(args.device), _options_for(args.threads))
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
        from graphgen.plots import ProfileRow, plot_profile

        rows = [
            ProfileRow(r.layer, r.op_types or (r.kernel_op,), r.best.median, profile.share(r), r.best.p10, r.best.p90)
            for r in profile.rows
        ]
        spread = f"{profile.spread} over {profile.runs} runs"
        heading = f"{title} on {profile.provider}: median of {profile.runs} runs ({profile.timing_text})"
        written = plot_profile(
            rows, args.plot, args.plot_size, title=heading, inference_us=profile.total_us, spread=spread
        )
        print(f"wrote {written}", file=out)
    if roof is not None:
        from graphgen.profiling.plots import plot_roofline

        print(f"wrote {plot_roofline(profile, roof, args.roofline, args.plot_size, title=title)}", file=out)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from graphgen.compare import expand
    from graphgen.profiling.bench import bench_architecture, format_table, to_csv

    names = expand(args.names)
    variant = architecture_options(args)
    rows = []
    for name in names:
        rows += bench_architecture(
            name, args.batch, runs=args.runs, variant=variant, providers=_providers(args.device),
            make_options=_options_for(args.threads),
        )  # fmt: skip
        print(f"  {name}: done", file=sys.stderr)
    print(format_table(rows))
    if args.csv:
        Path(args.csv).write_text(to_csv(rows))
        print(f"wrote {args.csv}")
    if args.plot:
        from graphgen.profiling.plots import plot_bench

        print(f"wrote {plot_bench(rows, args.plot, args.plot_size)}")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs", type=positive_int, default=DEFAULT_RUNS, help=f"measured runs (default {DEFAULT_RUNS})"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="execution provider (default cpu)")
    parser.add_argument("--threads", type=count, default=0, help="onnxruntime intra-op threads (0: its default)")
    parser.add_argument("--plot-size", type=size_argument, default=DEFAULT_SIZE, metavar="WxH", help="in pixels")


def add_parser(subparsers) -> None:
    profile = subparsers.add_parser("profile", help="per-layer time over repeated runs, beside MACs and bytes")
    profile.add_argument("name", help="architecture name or .onnx file")
    profile.add_argument("--batch", type=positive_int, default=1, metavar="N", help="images per run (default 1)")
    profile.add_argument("--warmup", type=count, default=DEFAULT_WARMUP_RUNS, help="uncounted runs first (default 2)")
    profile.add_argument("--json", action="store_true")
    profile.add_argument("--plot", type=plot_path_argument, metavar="PNG", help="per-layer times with their spread")
    profile.add_argument("--roofline", type=plot_path_argument, metavar="PNG",
                         help="achieved GMAC/s vs arithmetic intensity under this machine's measured roof")  # fmt: skip
    _common(profile)
    add_build_arguments(profile, batch=False)
    profile.set_defaults(func=cmd_profile)

    bench = subparsers.add_parser("bench", help="latency and throughput of architectures on this machine")
    bench.add_argument("names", nargs="+", metavar="PATTERN", help="architectures, or patterns such as 'resnet*'")
    bench.add_argument("--batch", type=_batches, default=[1], metavar="N[,N…]", help="batch sizes (default 1)")
    bench.add_argument("--csv", type=output_file, metavar="FILE", help="also write timm's benchmark-infer CSV columns")
    bench.add_argument("--plot", type=plot_path_argument, metavar="PNG", help="latency vs GMACs")
    bench.add_argument(
        "--deploy", action="store_true", default=None, help="RepVGG/ParNet: the deploy form (others unaffected)"
    )
    _common(bench)
    bench.set_defaults(func=cmd_bench)
