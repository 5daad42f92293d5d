"""KServe v2 over HTTP/REST against gRPC, side by side on one graphgen-server (a part of bench/server.py).

    python bench/server_http.py [--quick]      (or: python bench/server.py --only http)

The same ModelInfer request three ways, at batch 1 and 8, on the tiny model and
EfficientNet-Lite0: gRPC (raw_input_contents), HTTP with the binary tensor data extension, and
HTTP with JSON tensors. Each client is built once and keeps its connection (the gRPC channel, a
keep-alive HTTP/1.1 connection), so what differs is the server's protocol handling and the
encoding. The paths alternate in short rounds so drift on a shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
from pathlib import Path

import grpc
import numpy as np

from graphgen_client.local import LocalServer
from graphgen_protos import kserve_v2_pb2_grpc
from server import MODELS, build_repository, infer_request, timed  # bench/server.py (this script's directory)

ROUNDS = 4
CALLS = {"tiny": (300, 150), "lite0": (40, 10)}  # per path at batch 1 and 8, before --quick


class HttpInfer:
    """POST /v2/models/<m>/infer on one kept-alive connection; the body is encoded once."""

    def __init__(self, address: str, model: str, x: np.ndarray, binary: bool) -> None:
        host, port = address.rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=600)
        self.path = f"/v2/models/{model}/infer"
        tensor: dict = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
        output = {"name": "logits", "parameters": {"binary_data": binary}}
        if binary:
            tensor["parameters"] = {"binary_data_size": x.nbytes}
            header = json.dumps({"inputs": [tensor], "outputs": [output]}).encode()
            self.body = header + x.tobytes()
            self.headers = {"Inference-Header-Content-Length": str(len(header))}
        else:
            tensor["data"] = x.ravel().tolist()
            self.body = json.dumps({"inputs": [tensor], "outputs": [output]}).encode()
            self.headers = {}

    def __call__(self) -> bytes:
        self.connection.request("POST", self.path, self.body, self.headers)
        response = self.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {answer[:200]!r}")
        return answer


def http_vs_grpc(server: LocalServer, scale: float = 1.0) -> list[dict]:
    """Throughput and p50/p99 of gRPC, HTTP binary and HTTP JSON ModelInfer, per model and batch."""
    rows = []
    with grpc.insecure_channel(server.address) as channel:
        stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        for name, counts in CALLS.items():
            _, options, _ = MODELS[name]
            size = options.get("resolution", 224)
            for batch, count in zip((1, 8), counts):
                count = max(2, int(count * scale) // ROUNDS)
                x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
                request = infer_request(name, x)
                paths = {
                    "gRPC": lambda request=request: stub.ModelInfer(request, timeout=600),
                    "HTTP binary": HttpInfer(server.http_address, name, x, binary=True),
                    "HTTP JSON": HttpInfer(server.http_address, name, x, binary=False),
                }
                for call in paths.values():
                    call()  # warm-up (and the HTTP connection opened)
                latencies: dict[str, list[float]] = {path: [] for path in paths}
                for _ in range(ROUNDS):
                    for path, call in paths.items():
                        latencies[path] += timed(call, count)
                base = batch * len(latencies["gRPC"]) / sum(latencies["gRPC"])
                for path, values in latencies.items():
                    ordered = sorted(values)
                    throughput = batch * len(ordered) / sum(ordered)
                    rows.append(
                        {
                            "model": name,
                            "batch": batch,
                            "path": path,
                            "images_per_s": throughput,
                            "ratio_to_grpc": throughput / base,
                            "p50_us": statistics.median(ordered) * 1e6,
                            "p99_us": ordered[round(0.99 * (len(ordered) - 1))] * 1e6,
                            "calls": len(ordered),
                        }
                    )
    return rows


def print_http(rows: list[dict]) -> None:
    print("\nKServe v2 ModelInfer, HTTP/REST vs gRPC (one client, one call at a time):")
    print(f"{'model':<7} {'batch':>5}  {'path':<12} {'images/s':>9} {'vs gRPC':>8} {'p50 µs':>9} {'p99 µs':>9}")
    for r in rows:
        print(
            f"{r['model']:<7} {r['batch']:>5}  {r['path']:<12} {r['images_per_s']:>9.1f} {r['ratio_to_grpc']:>8.3f}"
            f" {r['p50_us']:>9.0f} {r['p99_us']:>9.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the calls")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="graphgen-bench-http-") as tmp:
        build_repository(Path(tmp), names=tuple(CALLS))
        with LocalServer(Path(tmp), ["--max-batch", "1"]) as server:
            print_http(http_vs_grpc(server, 0.25 if args.quick else 1.0))


if __name__ == "__main__":
    main()
