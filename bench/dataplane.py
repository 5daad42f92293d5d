"""The data plane under NVIDIA's perf_analyzer: graphgen-server beside a floor server and in-process runs.

    python bench/dataplane.py [--rounds 3] [--window-ms 2000] [--frontends 1,2] [--quick] [--json FILE]
                              [--perf-analyzer PATH] [--pa-arg=--async ...]

perf_analyzer (C++, from the tritonclient wheel; ``--perf-analyzer`` or ``$PERF_ANALYZER``, else
``perf_analyzer`` on PATH) drives, over gRPC, in interleaved rounds (the order of the servers
turns each round, so drift on a shared machine hits all alike):

- **floor**: ``bench/floor_server.py``, a minimal grpc.aio ModelInfer server running the same
  onnxruntime sessions inline, no checks, no statistics: what Python cannot go below;
- **graphgen/N**: graphgen-server with N front-ends (``--frontends N``; N = 1 only on a server
  that has no such option), default settings otherwise (``--device cpu``).

Scenarios, each one perf_analyzer run per server and round (its last windows are the figures):

- ``tiny@32``: the tiny model (mobilenet_v2 width 0.25 at 32x32) at 32 concurrent clients —
  requests/s, and **server CPU per request**: the server's process tree utime+stime over the
  whole run divided by the requests its ModelStatistics counted in that time;
- ``tiny@1``: one client — p50 latency;
- ``lite0@8``: EfficientNet-Lite0 (224x224) at 8 clients — requests/s.

Beside them, the in-process baseline: the tiny model's ``session.run`` at batch 1 in this process
(wall and CPU µs per call: what the model itself costs). perf_analyzer's own CPU per request
(the client, which shares the cores) is printed too. Inputs are zeros (``--input-data zero``).

Targets (issue 21): graphgen/1 CPU per request ≤ 1.25x the floor's; requests/s at 32 clients ≥
0.8x the floor's; p50 at one client ≤ 1.1x the floor's; graphgen/2 ≥ 1.7x graphgen/1 at 32
clients on tiny; EfficientNet-Lite0 at 8 clients no slower than before (compare with an earlier
run's JSON). Every figure comes with the load average it was measured at.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from grpc_health.v1 import health_pb2, health_pb2_grpc

from graphgen.build import BuildOptions, build, save
from graphgen_client.local import LocalServer
from graphgen_protos import kserve_v2_pb2 as pb
from graphgen_protos import kserve_v2_pb2_grpc
from graphgen_server.core.cpus import available_cpus, threads_per_instance
from graphgen_server.core.instances import DEFAULT_CPU_INSTANCES

MODELS = {  # name in the repository: (architecture, build options)
    "tiny": ("mobilenet_v2", BuildOptions(resolution=32, variant={"width": 0.25})),
    "efficientnet_lite0": ("efficientnet_lite0", BuildOptions()),
}
SCENARIOS = {"tiny@32": ("tiny", 32), "tiny@1": ("tiny", 1), "lite0@8": ("efficientnet_lite0", 8)}
FLOOR = Path(__file__).with_name("floor_server.py")
ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    round: int
    server: str
    scenario: str
    requests_per_s: float
    p50_us: float
    server_cpu_us: float  # per request over the whole perf_analyzer run
    client_cpu_us: float  # perf_analyzer's, per request
    requests: int
    load: float  # 1-minute load average at the end of the run
    health_p99_ms: float = float("nan")  # gRPC health checks answered meanwhile (graphgen, tiny@32)
    health_max_ms: float = float("nan")


def tree_cpu_s(root: int) -> float:
    """utime+stime of ``root`` and its live descendants (and of its reaped children), in seconds."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        reaped = int(fields[13]) + int(fields[14]) if pid == root else 0
        times[pid] = (int(fields[11]) + int(fields[12]) + reaped) / TICKS
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    return sum(times.get(pid, 0.0) for pid in tree)


def served(address: str, model: str) -> int:
    """Successful requests the server's ModelStatistics counts for ``model``."""
    with grpc.insecure_channel(address) as channel:
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model), timeout=30)
    return sum(s.inference_stats.success.count for s in response.model_stats)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def perf_analyzer(
    binary: str, address: str, model: str, clients: int, window_ms: int, extra: list[str], out: Path
) -> dict[str, float]:
    """One perf_analyzer run; its CSV row (throughput, p50...). No stability asked: the machine is shared."""
    flags = {
        "-m": model,
        "-x": "1",
        "-u": address,
        "-i": "grpc",
        "--concurrency-range": str(clients),
        "--input-data": "zero",
        "-p": str(window_ms),
        "-s": "1000",
        "-r": "3",
        "-f": str(out),
    }  # one flag and its value each
    command = [binary, *(part for flag, value in flags.items() for part in (flag, value)), *extra]
    out.unlink(missing_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120 + window_ms * 10 / 1000)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"perf_analyzer failed ({done.returncode}): {done.stdout[-1500:]}{done.stderr[-1500:]}")
    with out.open() as file:
        row = next(csv.DictReader(file))
    return {"requests_per_s": float(row["Inferences/Second"]), "p50_us": float(row["p50 latency"])}


def in_process(path: Path, seconds: float, threads: int) -> tuple[float, float]:
    """The tiny model's session.run at batch 1 in this process: (wall µs, CPU µs) per call."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.zeros((1, 3, 32, 32), np.float32)
    for _ in range(50):
        session.run(None, {name: x})
    calls, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        session.run(None, {name: x})
        calls += 1
    return (time.perf_counter() - wall) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6


class Floor:
    """bench/floor_server.py in its own process."""

    def __init__(self, paths: dict[str, Path], threads: int) -> None:
        command = [sys.executable, str(FLOOR), "--threads", str(threads)]
        command += [f"{name}={path}" for name, path in paths.items()]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("grpc_port="):
            self.process.kill()
            raise RuntimeError(f"the floor server did not start: {line!r}")
        self.address, self.pid = f"127.0.0.1:{line.split('=')[1]}", self.process.pid

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


class HealthProbe:
    """gRPC health checks every 100 ms on one server while the block runs: how long the answers took."""

    def __init__(self, address: str) -> None:
        self.address, self.latencies = address, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            while not self._stop.wait(0.1):
                started = time.perf_counter()
                check(health_pb2.HealthCheckRequest(), timeout=30)
                self.latencies.append(time.perf_counter() - started)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def figures(self) -> tuple[float, float]:
        """(p99, max) in ms."""
        ordered = sorted(self.latencies) or [float("nan")]
        return ordered[round(0.99 * (len(ordered) - 1))] * 1e3, ordered[-1] * 1e3


def has_frontends_option(env: dict[str, str]) -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "graphgen_server", "--help"], capture_output=True, text=True, timeout=60, env=env
    )
    return "--frontends" in done.stdout


@contextlib.contextmanager
def source_tree(tree: Path | None) -> Iterator[dict[str, str]]:
    """The environment running graphgen from ``tree`` (None: this checkout), set while the block runs."""
    saved = os.environ.get("PYTHONPATH")
    if tree is not None:  # (LocalServer starts the server with this process's environment)
        parts = [tree / "server", tree / "protos", tree / "clients", tree]
        os.environ["PYTHONPATH"] = os.pathsep.join(str(p) for p in parts)
    try:
        yield dict(os.environ)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def start_servers(
    stack: contextlib.ExitStack, args: argparse.Namespace, repository: Path, paths: dict[str, Path], threads: int
) -> dict[str, tuple[str, int]]:
    """Every server compared: name -> (gRPC address, pid of its process tree's root)."""
    floor = Floor(paths, threads)
    stack.callback(floor.stop)
    servers = {"floor": (floor.address, floor.pid)}
    trees: dict[str, Path | None] = {"graphgen": None}
    if args.before:
        old = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.before],
            check=True,
            capture_output=True,
            timeout=120,
        )
        stack.callback(
            subprocess.run,
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
            capture_output=True,
            timeout=120,
        )
        trees["before"] = old
    for label, tree in trees.items():
        with source_tree(tree) as env:
            counts = args.frontends if has_frontends_option(env) else [1]
            for count in counts:
                extra = ["--frontends", str(count)] if has_frontends_option(env) else []
                server = stack.enter_context(LocalServer(repository, ["--device", "cpu", *extra], start_timeout=300))
                assert server.process is not None
                servers[f"{label}/{count}"] = (server.address, server.process.pid)
    return servers


def measure(args: argparse.Namespace, repository: Path, out: Path) -> tuple[list[Measured], dict[str, float]]:
    paths = {name: repository / name / "1" / "model.onnx" for name in MODELS}
    for name, (architecture, options) in MODELS.items():
        save(build(architecture, options), paths[name])
    threads = threads_per_instance(available_cpus(), DEFAULT_CPU_INSTANCES)  # graphgen's, one front-end
    wall_us, cpu_us = in_process(paths["tiny"], 1.0 if args.quick else 3.0, threads)
    baseline = {"wall_us": wall_us, "cpu_us": cpu_us, "load": os.getloadavg()[0], "threads": threads}
    print(
        f"in-process tiny session.run, batch 1, {threads} intra-op thread(s): {wall_us:.0f} µs wall, "
        f"{cpu_us:.0f} µs CPU per call (load {baseline['load']:.2f})",
        flush=True,
    )
    results = []
    with contextlib.ExitStack() as stack:
        servers = start_servers(stack, args, repository, paths, threads)
        names = list(servers)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for scenario, (model, clients) in SCENARIOS.items():
                for name in order:
                    address, pid = servers[name]
                    probe = HealthProbe(address) if name != "floor" and scenario == "tiny@32" else None
                    before = (tree_cpu_s(pid), served(address, model), children_cpu_s())
                    with probe or contextlib.nullcontext():
                        figures = perf_analyzer(
                            args.perf_analyzer, address, model, clients, args.window_ms, args.pa_arg, out / "pa.csv"
                        )
                    cpu, count, client = tree_cpu_s(pid), served(address, model), children_cpu_s()
                    requests = max(count - before[1], 1)
                    health = probe.figures() if probe else (float("nan"), float("nan"))
                    row = Measured(
                        round_,
                        name,
                        scenario,
                        figures["requests_per_s"],
                        figures["p50_us"],
                        (cpu - before[0]) / requests * 1e6,
                        (client - before[2]) / requests * 1e6,
                        requests,
                        os.getloadavg()[0],
                        *health,
                    )
                    results.append(row)
                    shown = f", health p99 {health[0]:.1f} ms, max {health[1]:.1f} ms" if probe else ""
                    print(
                        f"round {round_} {scenario:8} {name:11} {row.requests_per_s:7.0f} req/s  p50 "
                        f"{row.p50_us:6.0f} µs  server CPU {row.server_cpu_us:5.0f} µs/req  client CPU "
                        f"{row.client_cpu_us:5.0f} µs/req  ({requests} requests, load {row.load:.2f}{shown})",
                        flush=True,
                    )
    return results, baseline


def median(results: list[Measured], server: str, scenario: str, attribute: str) -> float:
    values = [getattr(r, attribute) for r in results if r.server == server and r.scenario == scenario]
    return statistics.median(values) if values else float("nan")


# (label, server, ÷ server, scenario, figure, goal: "≤ x" / "≥ x" / "" for a figure shown only)
CHECKS = [
    ("CPU/request graphgen/1 ÷ floor", "graphgen/1", "floor", "tiny@32", "server_cpu_us", "≤ 1.25"),
    ("req/s at 32 graphgen/1 ÷ floor", "graphgen/1", "floor", "tiny@32", "requests_per_s", "≥ 0.8"),
    ("p50 at 1 graphgen/1 ÷ floor", "graphgen/1", "floor", "tiny@1", "p50_us", "≤ 1.1"),
    ("req/s at 32 graphgen/2 ÷ graphgen/1", "graphgen/2", "graphgen/1", "tiny@32", "requests_per_s", "≥ 1.7"),
    ("lite0@8 graphgen/2 ÷ graphgen/1", "graphgen/2", "graphgen/1", "lite0@8", "requests_per_s", ""),
    ("CPU/request graphgen/2 ÷ floor", "graphgen/2", "floor", "tiny@32", "server_cpu_us", ""),
    ("p50 at 1 graphgen/2 ÷ floor", "graphgen/2", "floor", "tiny@1", "p50_us", ""),
    ("req/s at 32 graphgen/2 ÷ before/1", "graphgen/2", "before/1", "tiny@32", "requests_per_s", ""),
    ("lite0@8 graphgen/2 ÷ before/1", "graphgen/2", "before/1", "lite0@8", "requests_per_s", "≥ 1.0"),
    ("lite0@8 graphgen/1 ÷ before/1", "graphgen/1", "before/1", "lite0@8", "requests_per_s", ""),
    ("CPU/request before/1 ÷ floor", "before/1", "floor", "tiny@32", "server_cpu_us", ""),
    ("req/s at 32 before/1 ÷ floor", "before/1", "floor", "tiny@32", "requests_per_s", ""),
    ("p50 at 1 before/1 ÷ floor", "before/1", "floor", "tiny@1", "p50_us", ""),
]


def summarize(results: list[Measured], baseline: dict[str, float]) -> list[str]:
    servers = list(dict.fromkeys(r.server for r in results))
    loads = [r.load for r in results]
    lines = [
        f"medians over rounds (load {min(loads):.2f}-{max(loads):.2f}; in-process tiny: "
        f"{baseline['wall_us']:.0f} µs wall, {baseline['cpu_us']:.0f} µs CPU per call)",
        f"{'server':11} {'tiny@32 req/s':>14} {'CPU µs/req':>11} {'health p99 ms':>14} {'tiny@1 p50 µs':>14} "
        f"{'lite0@8 req/s':>14}",
    ]
    for server in servers:
        lines.append(
            f"{server:11} {median(results, server, 'tiny@32', 'requests_per_s'):14.0f} "
            f"{median(results, server, 'tiny@32', 'server_cpu_us'):11.0f} "
            f"{median(results, server, 'tiny@32', 'health_p99_ms'):14.1f} "
            f"{median(results, server, 'tiny@1', 'p50_us'):14.0f} "
            f"{median(results, server, 'lite0@8', 'requests_per_s'):14.0f}"
        )
    for label, server, other, scenario, figure, goal in CHECKS:
        if server not in servers or other not in servers:
            continue
        value = median(results, server, scenario, figure) / median(results, other, scenario, figure)
        verdict = ""
        if goal:
            sense, bound = goal.split()
            met = value <= float(bound) if sense == "≤" else value >= float(bound)
            verdict = f"  (goal {goal}: {'met' if met else 'NOT met'})"
        lines.append(f"{label:38} {value:5.3f}x{verdict}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer's measurement window")
    parser.add_argument("--frontends", default="1,2", help="graphgen-server front-end counts to compare")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s windows")
    parser.add_argument("--perf-analyzer", default=os.environ.get("PERF_ANALYZER") or shutil.which("perf_analyzer"))
    parser.add_argument("--pa-arg", action="append", default=[], help="passed to perf_analyzer (e.g. --async)")
    parser.add_argument("--before", metavar="REF", help="also run graphgen-server from git revision REF (a worktree)")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()
    args.frontends = [int(n) for n in args.frontends.split(",")]
    if args.quick:
        args.rounds, args.window_ms = 1, 1000
    if not args.perf_analyzer:
        sys.exit(
            "perf_analyzer not found: pass --perf-analyzer PATH or set PERF_ANALYZER (tritonclient's wheel has it)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        results, baseline = measure(args, Path(tmp) / "repository", Path(tmp))
    print("\n".join(summarize(results, baseline)))
    if args.json:
        args.json.write_text(json.dumps({"baseline": baseline, "runs": [asdict(r) for r in results]}, indent=1))


if __name__ == "__main__":
    main()
