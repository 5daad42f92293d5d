"""System shared memory vs tensors in the request: 224x224 images, batch 8, under NVIDIA's perf_analyzer.

    python bench/shared_memory.py [--rounds 3] [--window-ms 2000] [--clients 1,4] [--quick] [--json FILE]
                                  [--perf-analyzer PATH]

One graphgen-server (``--allow-client-shm``, ``--device cpu``) serves two models taking
[N, 3, 224, 224] FP32 (4.8 MB a request at batch 8):

- ``pool``: GlobalAveragePool + Flatten, next to no compute: what moving the tensor costs;
- ``mobilenet_v2``: width 0.25 at 224x224 (random weights), a real, light network.

perf_analyzer (``--perf-analyzer``, ``$PERF_ANALYZER`` or on PATH; the tritonclient 2.50.0 wheel
ships it) drives each model over gRPC and HTTP, at batch 8 (``-b 8``) and each client count,
with the input in the request (gRPC ``raw_input_contents``, HTTP binary data) and in system
shared memory (``--shared-memory system``: input and output regions registered once, the
request only names them). The two ways run interleaved, their order turned each round, so drift
on a shared machine hits both alike. Per run: images/s, p50 latency, and the server's CPU per
request (its process tree's utime+stime over the run divided by the requests its
ModelStatistics counted). The table gives the medians over rounds and shared memory's ratio to
in-request; every figure comes with the load average it was measured at.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
from dataplane import served, tree_cpu_s  # (bench/, the script's own folder, is on sys.path)
from onnx import TensorProto, helper

from graphgen.build import BuildOptions, build, save
from graphgen_client.local import LocalServer

BATCH, SIDE = 8, 224
WAYS = ("in-request", "shared memory")


@dataclass
class Run:
    round: int
    model: str
    protocol: str
    clients: int
    way: str
    images_per_s: float
    p50_us: float
    server_cpu_us: float  # per request (of BATCH images)
    requests: int
    load: float  # 1-minute load average at the end of the run


def write_pool(path: Path) -> None:
    """[N, 3, 224, 224] -> [N, 3]: the transport alone (no compute worth the name)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])
    y = helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 3])
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["p"]), helper.make_node("Flatten", ["p"], ["pooled"])]
    model = helper.make_model(
        helper.make_graph(nodes, "pool", [x], [y]), opset_imports=[helper.make_opsetid("", 21)], ir_version=10
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def perf_analyzer(
    args: argparse.Namespace, server: LocalServer, model: str, protocol: str, clients: int, way: str, out: Path
) -> tuple[float, float]:
    """One run: (images/s, p50 µs) of its last windows. No stability asked: the machine is shared."""
    address = server.address if protocol == "grpc" else server.http_address
    command = [args.perf_analyzer, "-m", model, "-u", address, "-i", protocol, "-b", str(BATCH)]
    command += ["--concurrency-range", str(clients), "-p", str(args.window_ms), "-s", "1000", "-r", "3"]
    command += ["-f", str(out), *(["--shared-memory", "system"] if way == "shared memory" else [])]
    out.unlink(missing_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120 + args.window_ms * 10 / 1000)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"perf_analyzer failed ({done.returncode}): {done.stdout[-1500:]}{done.stderr[-1500:]}")
    with out.open() as file:
        row = next(csv.DictReader(file))
    return float(row["Inferences/Second"]), float(row["p50 latency"])


def measure(args: argparse.Namespace, repository: Path, out: Path) -> list[Run]:
    write_pool(repository / "pool" / "1" / "model.onnx")
    network = build("mobilenet_v2", BuildOptions(resolution=SIDE, variant={"width": 0.25}))
    save(network, repository / "mobilenet_v2" / "1" / "model.onnx")
    runs: list[Run] = []
    flags = ["--allow-client-shm", "--device", "cpu", "--metrics-port", "0"]
    with LocalServer(repository, flags) as server:
        assert server.process is not None
        for round_ in range(args.rounds):
            for model in ("pool", "mobilenet_v2"):
                for protocol in ("grpc", "http"):
                    for clients in args.clients:
                        for way in WAYS if round_ % 2 == 0 else WAYS[::-1]:
                            before, cpu = served(server.address, model), tree_cpu_s(server.process.pid)
                            images, p50 = perf_analyzer(args, server, model, protocol, clients, way, out)
                            requests = served(server.address, model) - before
                            cpu_us = (tree_cpu_s(server.process.pid) - cpu) / max(requests, 1) * 1e6
                            run = Run(
                                round_, model, protocol, clients, way, images, p50, cpu_us, requests, os.getloadavg()[0]
                            )
                            runs.append(run)
                            print(
                                f"round {round_} {model:12s} {protocol:4s} {clients} client(s) {way:13s}: "
                                f"{images:7.0f} images/s, p50 {p50 / 1000:7.2f} ms, server CPU "
                                f"{cpu_us / 1000:6.2f} ms/request (load {run.load:.2f})",
                                flush=True,
                            )
    return runs


def report(runs: list[Run]) -> None:
    def median(model: str, protocol: str, clients: int, way: str, field: str) -> float:
        return statistics.median(
            getattr(r, field)
            for r in runs
            if (r.model, r.protocol, r.clients, r.way) == (model, protocol, clients, way)
        )

    loads = [r.load for r in runs]
    size_mb, rounds = BATCH * 3 * SIDE * SIDE * 4 / 1e6, max(r.round for r in runs) + 1
    print(f"\nbatch {BATCH} of {SIDE}x{SIDE} FP32 ({size_mb:.1f} MB a request), medians over {rounds} rounds, ", end="")
    print(f"load {min(loads):.1f}-{max(loads):.1f} (os.getloadavg, 2 cores)")
    heading = ["model".ljust(12), "protocol".ljust(8), "clients".rjust(7), "|"]
    for figure, width in (("images/s", 15), ("p50 ms", 13), ("CPU ms/req", 17)):
        heading += [f"{figure} in-req".rjust(width), "shm".rjust(7), "ratio".rjust(6), "|"]
    print(" ".join(heading[:-1]))
    for model in dict.fromkeys(r.model for r in runs):
        for protocol in ("grpc", "http"):
            for clients in sorted({r.clients for r in runs}):
                cells = []
                for field, scale, width in (
                    ("images_per_s", 1.0, 15),
                    ("p50_us", 1e-3, 13),
                    ("server_cpu_us", 1e-3, 17),
                ):
                    plain, shm = (median(model, protocol, clients, way, field) * scale for way in WAYS)
                    cells.append(f"{plain:>{width}.2f} {shm:>7.2f} {shm / plain:>5.2f}x")
                print(f"{model:12s} {protocol:8s} {clients:>7d} | " + " | ".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer's measurement window")
    parser.add_argument("--clients", default="1,4", help="concurrent clients, comma-separated")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s windows, one client: a smoke run")
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument("--perf-analyzer", default=os.environ.get("PERF_ANALYZER") or shutil.which("perf_analyzer"))
    args = parser.parse_args()
    if not args.perf_analyzer:
        parser.error(
            "perf_analyzer not found: pass --perf-analyzer PATH or set PERF_ANALYZER (tritonclient's wheel has it)"
        )
    args.clients = [int(c) for c in args.clients.split(",")]
    if args.quick:
        args.rounds, args.window_ms, args.clients = 1, 1000, [1]
    with tempfile.TemporaryDirectory() as temp:
        runs = measure(args, Path(temp) / "repository", Path(temp) / "pa.csv")
    report(runs)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
