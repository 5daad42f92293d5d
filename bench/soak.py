"""Soak: many concurrent clients against one graphgen-server for a fixed time, then an overload burst.

    python bench/soak.py [--clients 64] [--seconds 60] [--warmup 10] [--json FILE]

Each client (an asyncio task with a channel of its own) sends calls one after another, a mix of
Classify with a PNG, Classify with a tensor, and ModelInfer; every answer is compared with the
one the server gave for the same input alone before the soak. The server's resident memory is
read from /proc every half second: its growth from the end of the warm-up to the end is the leak
measure. Then a burst of calls far beyond the queue bound must be refused RESOURCE_EXHAUSTED
quickly, none left hanging. The server (a subprocess on 127.0.0.1) is stopped with SIGTERM at
the end and must exit 0. ``tests/server/e2e/test_soak.py`` runs a short version.

Goals: no failed valid call, RSS growth after the warm-up under 10%, every burst call answered
within 5 s, most of them refused.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from graphgen.build import BuildOptions, build, save
from graphgen_client.local import LocalServer
from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import classifier_pb2_grpc, kserve_v2_pb2_grpc
from graphgen_protos import kserve_v2_pb2 as kpb

SIZE, CLASSES = 32, 10  # EfficientNet-Lite0 at 32x32: a real graph, fast enough to stress the serving path
MAX_QUEUE, BURST_CALLS, BURST_ROWS = 256, 200, 16
CALL_TIMEOUT_S, BURST_LIMIT_S = 60.0, 5.0
GOAL_RSS_GROWTH = 0.10


@dataclass
class SoakReport:
    clients: int
    seconds: float
    calls: int = 0
    failures: list[str] = field(default_factory=list)  # the first few
    failed: int = 0
    calls_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    rss_after_warmup_mib: float = 0.0
    rss_end_mib: float = 0.0
    rss_growth: float = 0.0
    burst_refused: int = 0
    burst_answered: int = 0
    burst_other: list[str] = field(default_factory=list)
    burst_max_s: float = 0.0
    exit_status: int | None = None

    @property
    def passed(self) -> bool:
        return (
            self.failed == 0
            and self.rss_growth < GOAL_RSS_GROWTH
            and not self.burst_other
            and self.burst_max_s < BURST_LIMIT_S
            and self.burst_refused > self.burst_answered
            and self.exit_status == 0
        )


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (30 + seed, 40, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _infer_request(batch: np.ndarray) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input", datatype="FP32", shape=batch.shape)
    request.raw_input_contents.append(batch.tobytes())
    return request


def _calls() -> list[tuple[str, object]]:
    """The soak's valid calls: (method, request)."""
    rng = np.random.default_rng(0)
    calls: list[tuple[str, object]] = []
    for seed in range(4):
        calls.append(("Classify", cpb.ClassifyRequest(model="tiny", images=[_png(seed)], top_k=3)))
        tensor = rng.standard_normal((1, 3, SIZE, SIZE), dtype=np.float32)
        calls.append(
            (
                "Classify",
                cpb.ClassifyRequest(model="tiny", tensor=cpb.Tensor(shape=tensor.shape, data=tensor.tobytes())),
            )
        )
        calls.append(("ModelInfer", _infer_request(rng.standard_normal((2, 3, SIZE, SIZE), dtype=np.float32))))
    return calls


def _answer(method: str, response) -> object:
    """What must be the same every time: classes in order, or the logits."""
    if method == "Classify":
        return [[c.index for c in result.classes] for result in response.results]
    return np.frombuffer(response.raw_output_contents[0], np.float32)


def _same(method: str, got: object, expected: object) -> bool:
    return got == expected if method == "Classify" else np.allclose(got, expected, rtol=1e-5, atol=1e-5)


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        classifier = classifier_pb2_grpc.ClassifierStub(channel)
        kserve = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        self.methods = {"Classify": classifier.Classify, "ModelInfer": kserve.ModelInfer}

    async def call(self, method: str, request):
        return await self.methods[method](request, timeout=CALL_TIMEOUT_S)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _soak(address: str, pid: int, clients: int, seconds: float, warmup: float, report: SoakReport) -> None:
    calls = _calls()
    channels = [grpc.aio.insecure_channel(address) for _ in range(clients)]
    stubs = [Stubs(channel) for channel in channels]
    expected = [_answer(m, await stubs[0].call(m, r)) for m, r in calls]  # one at a time, before the load
    latencies: list[float] = []
    rss: list[tuple[float, float]] = []
    started = time.perf_counter()
    end = started + seconds

    async def client(index: int) -> None:
        n = index
        while time.perf_counter() < end:
            method, request = calls[n % len(calls)]
            sent = time.perf_counter()
            try:
                got = _answer(method, await stubs[index].call(method, request))
                if not _same(method, got, expected[n % len(calls)]):
                    raise ValueError(f"{method}: a different answer than alone")
            except (grpc.aio.AioRpcError, ValueError) as error:
                report.failed += 1
                if len(report.failures) < 5:
                    report.failures.append(str(error)[:300])
            latencies.append(time.perf_counter() - sent)
            n += 1

    async def sample_rss() -> None:
        while time.perf_counter() < end:
            rss.append((time.perf_counter() - started, rss_mib(pid)))
            await asyncio.sleep(0.5)

    await asyncio.gather(sample_rss(), *(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    after_warmup = [mib for t, mib in rss if warmup - 2 <= t <= warmup] or [rss[0][1]]
    report.rss_after_warmup_mib = statistics.median(after_warmup)
    report.rss_end_mib = statistics.median(mib for _, mib in rss[-3:])
    report.rss_growth = report.rss_end_mib / report.rss_after_warmup_mib - 1
    ordered = sorted(latencies)
    report.calls, report.calls_per_s = len(ordered), len(ordered) / elapsed
    report.p50_ms = 1e3 * ordered[len(ordered) // 2]
    report.p99_ms = 1e3 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    report.max_ms = 1e3 * ordered[-1]
    await _burst(stubs, report)
    for channel in channels:
        await channel.close()


async def _burst(stubs: list[Stubs], report: SoakReport) -> None:
    """Calls of BURST_ROWS rows (or images) each, all at once: far more rows than the queue bound."""
    batch = np.random.default_rng(1).standard_normal((BURST_ROWS, 3, SIZE, SIZE), dtype=np.float32)
    requests = {
        "ModelInfer": _infer_request(batch),
        "Classify": cpb.ClassifyRequest(model="tiny", images=[_png(seed % 4) for seed in range(BURST_ROWS)]),
    }

    async def one(index: int) -> tuple[str, float]:
        method = "Classify" if index % 2 else "ModelInfer"
        sent = time.perf_counter()
        try:
            await stubs[index % len(stubs)].call(method, requests[method])
            outcome = "OK"
        except grpc.aio.AioRpcError as error:
            outcome = (
                error.code().name
                if "queue full" in (error.details() or "")
                else f"{error.code().name}: {error.details()}"
            )
        return outcome, time.perf_counter() - sent

    results = await asyncio.gather(*(one(i) for i in range(BURST_CALLS)))
    report.burst_refused = sum(outcome == "RESOURCE_EXHAUSTED" for outcome, _ in results)
    report.burst_answered = sum(outcome == "OK" for outcome, _ in results)
    report.burst_other = [outcome for outcome, _ in results if outcome not in {"OK", "RESOURCE_EXHAUSTED"}][:5]
    report.burst_max_s = max(seconds for _, seconds in results)


def soak(
    clients: int = 64, seconds: float = 60.0, warmup: float = 10.0, server_args: list[str] | None = None
) -> SoakReport:
    """Run the soak against a fresh server with the tiny model; the server is stopped at the end."""
    report = SoakReport(clients, seconds)
    with tempfile.TemporaryDirectory(prefix="graphgen-soak-") as directory:
        repository = Path(directory)
        model = build("efficientnet_lite0", BuildOptions(resolution=SIZE, num_classes=CLASSES))
        save(model, repository / "tiny" / "1" / "model.onnx")
        args = ["--max-queue", str(MAX_QUEUE), "--max-images", str(BURST_ROWS), "--grace", "30", *(server_args or [])]
        with LocalServer(repository, args) as server:
            assert server.process is not None
            asyncio.run(_soak(server.address, server.process.pid, clients, seconds, warmup, report))
        report.exit_status = server.returncode
    return report


def format_report(report: SoakReport) -> str:
    verdict = "PASS" if report.passed else "FAIL"
    return "\n".join(
        [
            f"soak: {report.clients} clients for {report.seconds:.0f} s: {report.calls} calls ({report.calls_per_s:.0f}/s), "
            f"{report.failed} failed",
            f"  latency: p50 {report.p50_ms:.1f} ms, p99 {report.p99_ms:.1f} ms, max {report.max_ms:.1f} ms",
            f"  server RSS: {report.rss_after_warmup_mib:.1f} MiB after warm-up -> {report.rss_end_mib:.1f} MiB at the end "
            f"({100 * report.rss_growth:+.1f}%; goal < {100 * GOAL_RSS_GROWTH:.0f}%)",
            f"  overload: {BURST_CALLS} calls of {BURST_ROWS} rows or images (queue bound {MAX_QUEUE}): "
            f"{report.burst_refused} RESOURCE_EXHAUSTED, {report.burst_answered} answered, other {report.burst_other}; "
            f"slowest {report.burst_max_s:.2f} s (goal < {BURST_LIMIT_S:.0f} s)",
            f"  server exit status {report.exit_status}; failures: {report.failures or 'none'}",
            f"  {verdict}",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the RSS baseline")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    report = soak(args.clients, args.seconds, args.warmup)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "passed": report.passed}, indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
