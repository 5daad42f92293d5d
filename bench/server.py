"""graphgen-server against in-process onnxruntime, side by side in one run.

    python bench/server.py [--quick] [--json FILE]

1. serving overhead: in-process ``session.run`` (the server's session options) vs gRPC
   ModelInfer and Classify (a tensor), at batch 1 and 8, for a tiny model, a small one
   (EfficientNet-Lite0) and ResNet-50: throughput and p50/p99 latency. The paths alternate in short rounds so drift on a shared machine hits
   both alike. One client, one call at a time; the server in its own process.
2. dynamic batching on vs off at 1, 8 and 32 concurrent clients, and instance_group count 2 vs 1
   at 8 clients (bench/server_batching.py).
3. profiled vs unprofiled Classify (the repeated profile: 10 runs), and unprofiled latency while
   profiled calls run: see bench/server_profiling.py.
4. KServe v2 over HTTP/REST (binary and JSON tensors) vs gRPC: see bench/server_http.py.

Goals: gRPC ≥ 0.95x in-process throughput for ResNet-50 at batch 8; ≤ 150 µs added p50 on the
tiny model; a profiled run ≤ 1.10x an unprofiled one; unprofiled p50 while profiled calls run
≤ 1.10x alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from graphgen.build import BuildOptions, build, save
from graphgen_client.local import LocalServer
from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import classifier_pb2_grpc, kserve_v2_pb2_grpc
from graphgen_protos import kserve_v2_pb2 as kpb

MODELS = {  # name: (architecture, build options, iterations at batch 1 and 8 per path)
    "tiny": ("efficientnet_lite0", {"resolution": 32, "num_classes": 10}, (400, 200)),
    "lite0": ("efficientnet_lite0", {}, (60, 12)),
    "resnet50": ("resnet50", {}, (16, 4)),
}
ROUNDS = 4
SECTIONS = ("overhead", "profiling", "batching", "http")


@dataclass
class Figures:
    name: str
    images_per_s: float
    p50_us: float
    p99_us: float
    calls: int


def figures(name: str, latencies: list[float], batch: int) -> Figures:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return Figures(name, batch * len(ordered) / sum(ordered), statistics.median(ordered) * 1e6, p99 * 1e6, len(ordered))


def timed(call: Callable[[], object], count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def build_repository(root: Path, names: tuple[str, ...] = tuple(MODELS)) -> dict[str, Path]:
    paths = {}
    for name in names:
        architecture, options, _ = MODELS[name]
        paths[name] = save(build(architecture, BuildOptions(**options)), root / name / "1" / "model.onnx")
    return paths


def infer_request(model: str, x: np.ndarray) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    return request


def serving_overhead(address: str, paths: dict[str, Path], scale: float) -> list[dict]:
    rows = []
    with grpc.insecure_channel(address) as channel:
        kserve = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        classifier = classifier_pb2_grpc.ClassifierStub(channel)
        for name, (_, _, counts) in MODELS.items():
            options = ort.SessionOptions()
            options.log_severity_level = 3
            # The server's session options: idle threads sleep rather than spin (see ServerConfig).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(str(paths[name]), options, providers=["CPUExecutionProvider"])
            shape = session.get_inputs()[0].shape
            for batch, count in zip((1, 8), counts):
                count = max(2, int(count * scale) // ROUNDS)
                x = np.random.default_rng(0).standard_normal((batch, *shape[1:]), dtype=np.float32)
                infer = infer_request(name, x)  # built once: the client's own cost is its serialisation
                classify = cpb.ClassifyRequest(model=name, tensor=cpb.Tensor(shape=x.shape, data=x.tobytes()))
                paths_ = {
                    "in-process": lambda session=session, x=x: session.run(None, {"input": x}),
                    "ModelInfer": lambda infer=infer: kserve.ModelInfer(infer, timeout=600),
                    "Classify": lambda classify=classify: classifier.Classify(classify, timeout=600),
                }
                for call in paths_.values():
                    call()  # warm-up
                latencies: dict[str, list[float]] = {p: [] for p in paths_}
                for _ in range(ROUNDS):
                    for path, call in paths_.items():
                        latencies[path] += timed(call, count)
                base = figures("in-process", latencies["in-process"], batch)
                for path, values in latencies.items():
                    row = figures(path, values, batch)
                    rows.append(
                        {
                            "model": name,
                            "batch": batch,
                            **asdict(row),
                            "throughput_ratio": row.images_per_s / base.images_per_s,
                            "added_p50_us": row.p50_us - base.p50_us,
                        }
                    )
    return rows


def concurrent_clients(address: str, model: str, clients: int, calls: int, shape: tuple[int, ...]) -> dict:
    x = np.random.default_rng(1).standard_normal((1, *shape), dtype=np.float32)
    request = cpb.ClassifyRequest(model=model, tensor=cpb.Tensor(shape=x.shape, data=x.tobytes()), top_k=1)
    latencies: list[float] = []
    batch_sizes: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client() -> None:
        with grpc.insecure_channel(address) as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            stub.Classify(request, timeout=600)
            barrier.wait(timeout=120)
            for _ in range(calls):
                start = time.perf_counter()
                answer = stub.Classify(request, timeout=600)
                with lock:
                    latencies.append(time.perf_counter() - start)
                    batch_sizes.append(answer.timings.batch_size)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=1200)
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "images_per_s": len(ordered) / wall,
        "p50_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[round(0.99 * (len(ordered) - 1))] * 1e6,
        "mean_batch": statistics.mean(batch_sizes),
        "calls": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the iterations")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these parts (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    scale = 0.25 if args.quick else 1.0
    sections = args.only or list(SECTIONS)
    report: dict = {"device": ort.get_device(), "onnxruntime": ort.__version__}
    with tempfile.TemporaryDirectory(prefix="graphgen-bench-") as tmp:
        paths = build_repository(Path(tmp))
        print(f"onnxruntime {ort.__version__} ({ort.get_device()}); models built in {tmp}")
        with LocalServer(Path(tmp), ["--dynamic-batching", "off"]) as server:
            if "overhead" in sections:
                report["overhead"] = serving_overhead(server.address, paths, scale)
                print_overhead(report["overhead"])
            if "profiling" in sections:
                from server_profiling import print_profiling, profiling_section  # (this directory)

                report["profiling"] = profiling_section(server.address, paths, scale)
                print_profiling(report["profiling"])
            if "http" in sections:
                from server_http import http_vs_grpc, print_http  # (this directory)

                report["http"] = http_vs_grpc(server, scale)
                print_http(report["http"])
        if "batching" in sections:
            from server_batching import batching_section, print_batching  # (this directory)

            report["batching"] = batching_section(Path(tmp), paths, scale)
            print_batching(report["batching"])
    print_goals(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def print_overhead(rows: list[dict]) -> None:
    print(
        f"\n{'model':<9} {'batch':>5}  {'path':<11} {'images/s':>9} {'ratio':>6} {'p50 µs':>10} {'p99 µs':>10} {'+p50 µs':>9}"
    )
    for r in rows:
        print(
            f"{r['model']:<9} {r['batch']:>5}  {r['name']:<11} {r['images_per_s']:>9.1f} {r['throughput_ratio']:>6.3f}"
            f" {r['p50_us']:>10.0f} {r['p99_us']:>10.0f} {r['added_p50_us']:>9.0f}"
        )


def print_goals(report: dict) -> None:
    goals = []
    if "overhead" in report:
        rows = report["overhead"]
        r50 = next(r for r in rows if r["model"] == "resnet50" and r["batch"] == 8 and r["name"] == "ModelInfer")
        tiny = next(r for r in rows if r["model"] == "tiny" and r["batch"] == 1 and r["name"] == "ModelInfer")
        goals.append(
            (
                "gRPC >= 0.95x in-process throughput, ResNet-50 batch 8",
                f"{r50['throughput_ratio']:.3f}x",
                r50["throughput_ratio"] >= 0.95,
            )
        )
        goals.append(
            (
                "<= 150 µs added p50, tiny model (ModelInfer)",
                f"{tiny['added_p50_us']:.0f} µs",
                tiny["added_p50_us"] <= 150,
            )
        )
    if "profiling" in report:
        from server_profiling import profiling_goals  # (this directory)

        goals += profiling_goals(report["profiling"])
    print("\ngoals:")
    for what, value, met in goals:
        print(f"  [{'met' if met else 'MISSED'}] {what}: {value}")
    report["goals"] = [{"goal": g, "value": v, "met": m} for g, v, m in goals]


if __name__ == "__main__":
    main()
