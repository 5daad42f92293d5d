"""A rolling update of three replicas under load, on this machine: throughput per phase, 0 failed calls.

    python bench/replicas.py [--clients 16] [--seconds 20] [--pre-stop-delay 1] [--json FILE]

Three graphgen-servers listen on loopback ports; ``--clients`` threads, each with its own
``graphgen_client.Client`` on the one target ``127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`` (gRPC
round robin over the servers whose health says SERVING, UNAVAILABLE retried), send ModelInfer
calls one after another. Meanwhile each server in turn gets SIGTERM (``--pre-stop-delay``: health
NOT_SERVING, still answering; then the drain) and is started again on its port once it exited:
what a Kubernetes rolling update does to a Deployment's pods. Every answer is compared with the
same model run by onnxruntime in this process.

A probe beside the load calls the server being stopped directly (no balancing, no retry) and
watches its health: it must go on answering for the pre-stop delay after health said
NOT_SERVING, and end with nothing but UNAVAILABLE. ``tests/deploy/test_replicas.py`` runs this.
The load runs for ``--seconds`` or until the third replica is back, whichever is later (here a
restart takes 3-4 s, so about 25 s in all).

Goals: 0 failed calls, 0 wrong answers, calls answered in every phase.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from graphgen_client import Client, ClientError
from graphgen_client.local import LocalServer
from graphgen_protos import kserve_v2_pb2 as kpb
from graphgen_protos import kserve_v2_pb2_grpc

SIZE, CLASSES, MODEL = 32, 10, "tiny"
REPLICAS = 3
SERVER_ARGS = ["--device", "cpu", "--workers", "2", "--grace", "10"]
SETTLE_S = 1.0  # after a restart, before the next replica is stopped (clients reconnect)


@dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0
    calls: int = 0

    @property
    def calls_per_s(self) -> float:
        return self.calls / max(self.end - self.start, 1e-9)


@dataclass
class ProbeResult:
    """The stopped server seen directly: seconds from health NOT_SERVING to its last answer."""

    replica: int
    answered_after_not_serving_s: float
    statuses: dict[str, int]


@dataclass
class ReplicaReport:
    clients: int
    pre_stop_delay_s: float
    calls: int = 0
    failed: int = 0
    wrong: int = 0  # beyond float tolerance (rtol 1e-5) of onnxruntime in this process
    inexact: int = 0  # within it, but not bit-equal (a row run in a dynamic batch of several)
    retried: int = 0
    failures: list[str] = field(default_factory=list)  # the first few
    phases: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)


class Replica:
    """One server: started on a port of its own, stopped with SIGTERM, started again on the same port."""

    def __init__(self, repository: Path, args: list[str]) -> None:
        self.repository, self.args, self.port = repository, args, 0
        self.server: LocalServer | None = None

    def start(self) -> None:
        self.server = LocalServer(self.repository, [*self.args, "--port", str(self.port)]).__enter__()
        self.port = self.server.port
        with Client(self.server.address, timeout=10) as client:
            client.wait_until_serving(60)

    def stop(self) -> int:
        assert self.server is not None
        self.server.signal(signal.SIGTERM)
        return self.server.wait(120)


def _expected(model_path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    return [session.run(None, {"input": x})[0] for x in inputs]


def _probe(address: str, x: np.ndarray, done: threading.Event, outcomes: list, not_serving: list) -> None:
    """Direct calls and a health watch on one server until ``done``: call (time, status), NOT_SERVING times."""

    def watch() -> None:
        with grpc.insecure_channel(address) as channel:
            try:
                for answer in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=120):
                    if answer.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                        not_serving.append(time.monotonic())
            except grpc.RpcError:
                pass  # the server went away

    def call() -> None:
        # A plain channel: no health checking, no retry (graphgen's Client would move away at once).
        request = kpb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="input", datatype="FP32", shape=x.shape)
        request.raw_input_contents.append(x.tobytes())
        with grpc.insecure_channel(address) as channel:
            infer = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            while not done.is_set():
                try:
                    infer(request, timeout=10)
                    outcomes.append((time.monotonic(), "OK"))
                except grpc.RpcError as error:
                    outcomes.append((time.monotonic(), error.code().name))
                    if "connect" in (error.details() or "").lower():
                        return  # gone
                    time.sleep(0.01)

    threads = [threading.Thread(target=watch, daemon=True), threading.Thread(target=call, daemon=True)]
    for thread in threads:
        thread.start()
    threads[1].join(timeout=180)


def run(
    repository: Path, model_path: Path, *, clients: int = 16, seconds: float = 20.0, pre_stop_delay: float = 1.0
) -> ReplicaReport:
    report = ReplicaReport(clients=clients, pre_stop_delay_s=pre_stop_delay)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 3, SIZE, SIZE), dtype=np.float32) for _ in range(clients)]
    expected = _expected(model_path, inputs)
    args = [*SERVER_ARGS, "--pre-stop-delay", str(pre_stop_delay)]
    replicas = [Replica(repository, args) for _ in range(REPLICAS)]
    for replica in replicas:
        replica.start()
    target = ",".join(f"127.0.0.1:{r.port}" for r in replicas)
    phases = [Phase(f"{REPLICAS} serving", time.monotonic())]
    lock, stop = threading.Lock(), threading.Event()
    answered: list[float] = []

    def load(index: int) -> None:
        with Client(target, timeout=30) as client:
            while not stop.is_set():
                try:
                    answer = client.infer(MODEL, {"input": inputs[index]})["logits"]
                    exact = np.array_equal(answer, expected[index])
                    close = exact or np.allclose(answer, expected[index], rtol=1e-5, atol=1e-6)
                    with lock:
                        report.calls += 1
                        answered.append(time.monotonic())
                        report.wrong += not close
                        report.inexact += not exact
                except ClientError as error:
                    with lock:
                        report.calls += 1
                        report.failed += 1
                        if len(report.failures) < 10:
                            report.failures.append(str(error))
            with lock:
                report.retried += client.retried

    threads = [threading.Thread(target=load, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        time.sleep(min(2.0, seconds / 10))
        for number, replica in enumerate(replicas, 1):
            phases.append(Phase(f"replica {number} stopping (pre-stop {pre_stop_delay:g} s, drain)", time.monotonic()))
            done = threading.Event()
            outcomes: list[tuple[float, str]] = []
            not_serving: list[float] = []
            assert replica.server is not None
            prober = threading.Thread(
                target=_probe, args=(replica.server.address, inputs[0], done, outcomes, not_serving), daemon=True
            )
            prober.start()
            time.sleep(0.2)  # the probe's watch and first calls are under way
            code = replica.stop()
            done.set()
            prober.join(timeout=60)
            report.probes.append(asdict(_probe_result(number, outcomes, not_serving)))
            if code != 0:
                report.failures.append(f"replica {number} exited {code}")
            phases.append(Phase(f"replica {number} restarting", time.monotonic()))
            replica.start()
            phases.append(Phase(f"{REPLICAS} serving (replica {number} new)", time.monotonic()))
            time.sleep(SETTLE_S)
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    finally:
        stop.set()
        end = time.monotonic()
        for thread in threads:
            thread.join(timeout=120)
        for replica in replicas:
            if replica.server is not None:
                replica.server.stop()
    for phase, following in zip(phases, [*phases[1:], None]):
        phase.end = following.start if following else end
        phase.calls = sum(phase.start <= t < phase.end for t in answered)
    report.phases = [
        {
            "phase": p.name,
            "seconds": round(p.end - p.start, 2),
            "calls": p.calls,
            "calls_per_s": round(p.calls_per_s, 1),
        }
        for p in phases
    ]
    return report


def _probe_result(replica: int, outcomes: list[tuple[float, str]], not_serving: list[float]) -> ProbeResult:
    statuses: dict[str, int] = {}
    for _, status in outcomes:
        statuses[status] = statuses.get(status, 0) + 1
    oks = [t for t, status in outcomes if status == "OK"]
    answered = (max(oks) - not_serving[0]) if oks and not_serving else float("nan")
    return ProbeResult(replica, round(answered, 3), statuses)


def build_tiny(directory: Path) -> Path:
    from graphgen.build import BuildOptions, build, save

    model = build("efficientnet_lite0", BuildOptions(resolution=SIZE, num_classes=CLASSES))
    return save(model, directory / MODEL / "1" / "model.onnx")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--pre-stop-delay", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        model_path = build_tiny(Path(directory))
        report = run(
            Path(directory), model_path, clients=args.clients, seconds=args.seconds, pre_stop_delay=args.pre_stop_delay
        )
    print(
        f"{args.clients} clients, {REPLICAS} replicas on 127.0.0.1, pre-stop delay {args.pre_stop_delay:g} s "
        f"(timings on a shared machine: noisy)"
    )
    print(f"{'phase':<48} {'seconds':>8} {'calls':>7} {'calls/s':>8}")
    for phase in report.phases:
        print(f"{phase['phase']:<48} {phase['seconds']:>8.2f} {phase['calls']:>7} {phase['calls_per_s']:>8.1f}")
    print(
        f"calls {report.calls}, failed {report.failed}, wrong {report.wrong} "
        f"(not bit-equal but within rtol 1e-5: {report.inexact}), retried {report.retried}"
    )
    for probe in report.probes:
        print(
            f"replica {probe['replica']} probed directly: answered {probe['answered_after_not_serving_s']:.2f} s "
            f"after health said NOT_SERVING; {probe['statuses']}"
        )
    for failure in report.failures:
        print("  failure:", failure)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    return 0 if report.failed == 0 and report.wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
