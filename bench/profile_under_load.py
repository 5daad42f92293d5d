"""Profiles asked of a busy server: which per-layer figure survives the load, at which profile priority.

For each profile priority and mode (``--profile-nice`` 19 and ``--profile-mode shared``: serving
first, as before; nice 0 shared: a fair share; nice 0 exclusive: the profile holds the model), a
fresh graphgen-server serving ResNet-50 (random weights, batch 1) is asked for a profile with no
other load (the reference), then for two profiles while 8 clients classify in a loop. For each
figure a row could headline — the minimum, the 10th percentile, the median of its runs — it
prints how far the loaded profiles are from the reference's minimum (median relative error over
the layers above 2% of the time), their Spearman rank correlation with the reference and with each
other over those layers, and whether both name the reference's top layer (or one of its tied group).
Also each profile's wall time, its split (queue, setup, waiting for the profiler, runs) and its
runs' CPU waits. Figures depend on the machine's own load: it is printed (os.getloadavg()).

    python bench/profile_under_load.py [--runs 10] [--clients 8] [--variants 19:shared,0:shared,0:exclusive]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graphgen.build import build, save
from graphgen.profiling.summary import MIN_TIE
from graphgen_client.local import LocalServer
from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import classifier_pb2_grpc
from tests.support.profiling import spearman

STATS = ("min", "p10", "median")
ABOVE = 0.02


def _figures(profile: cpb.Profile, stat: str) -> dict[str, float]:
    field = {"min": "min_us", "p10": "p10_us", "median": "median_us"}[stat]
    return {layer.layer: getattr(layer, field) for layer in profile.layers}


def _top_group(profile: cpb.Profile, stat: str) -> set[str]:
    """The slowest row by ``stat`` and the rows tied with it, as graphgen's profiles tie them."""
    figures = _figures(profile, stat)
    top = max(figures, key=figures.__getitem__)
    if stat != "median":  # within the minimum's error under load
        return {layer for layer, value in figures.items() if value >= figures[top] * (1 - MIN_TIE)}
    spread = {row.layer: (row.p10_us, row.p90_us) for row in profile.layers}
    return {layer for layer, value in figures.items() if value >= spread[top][0] and spread[layer][1] >= figures[top]}


def _ask(stub, request) -> tuple[cpb.ClassifyResponse, float]:
    started = time.perf_counter()
    answer = stub.Classify(request, timeout=900)
    return answer, time.perf_counter() - started


def _loop(address: str, request, stop: threading.Event, done: list[int]) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        while not stop.is_set():
            stub.Classify(request, timeout=900)
            done.append(1)


def variant(repository: Path, nice: int, mode: str, runs: int, clients: int) -> dict:
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    tensor = cpb.Tensor(shape=x.shape, data=x.tobytes())
    plain = cpb.ClassifyRequest(model="resnet50", tensor=tensor)
    profiled = cpb.ClassifyRequest(model="resnet50", tensor=tensor, profile=True, profile_runs=runs)
    server_args = ["--profile-nice", str(nice), "--profile-mode", mode, "--http-port", "0", "--metrics-port", "0"]
    with LocalServer(repository, server_args) as server, grpc.insecure_channel(server.address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        stub.Classify(plain, timeout=900)
        _ask(stub, profiled)  # the first profile maps the kernels; not counted
        quiet, quiet_s = _ask(stub, profiled)
        stop, done = threading.Event(), []
        loops = [threading.Thread(target=_loop, args=(server.address, plain, stop, done)) for _ in range(clients)]
        for thread in loops:
            thread.start()
        time.sleep(2.0)  # the clients are looping
        load = os.getloadavg()[0]
        loaded = [_ask(stub, profiled) for _ in range(2)]
        stop.set()
        for thread in loops:
            thread.join(timeout=900)
    reference = _figures(quiet.profile, "min")
    total = sum(reference.values())
    big = [layer for layer, t in reference.items() if t / total >= ABOVE]
    out: dict = {"nice": nice, "mode": mode, "load": load, "served_during": len(done), "quiet_s": quiet_s, "stats": {}}
    out["quiet_wait"] = statistics.median(quiet.profile.run_cpu_waits) if quiet.profile.run_cpu_waits else None
    out["profiles"] = [
        {
            "wall_s": seconds,
            "queue_ms": a.timings.queue_us / 1e3,
            "setup_ms": a.timings.profile_setup_us / 1e3,
            "wait_ms": a.timings.profile_wait_us / 1e3,
            "runs_ms": a.timings.inference_us / 1e3,
            "cpu_wait": statistics.median(a.profile.run_cpu_waits) if a.profile.run_cpu_waits else None,
            "adds_up": a.profile.layers_us / a.profile.inference_us,
        }
        for a, seconds in loaded
    ]
    quiet_top = _top_group(quiet.profile, "min")
    for stat in STATS:
        first, second = (_figures(a.profile, stat) for a, _ in loaded)
        errors = [abs(p[layer] - reference[layer]) / reference[layer] for p in (first, second) for layer in big]
        out["stats"][stat] = {
            "error": statistics.median(errors),
            "spearman_ref": min(
                spearman([p[layer] for layer in big], [reference[layer] for layer in big]) for p in (first, second)
            ),
            "spearman_pair": spearman([first[layer] for layer in big], [second[layer] for layer in big]),
            "same_top": all(bool(_top_group(a.profile, stat) & quiet_top) for a, _ in loaded)
            and bool(_top_group(loaded[0][0].profile, stat) & _top_group(loaded[1][0].profile, stat)),
        }
    out["layers"] = len(big)
    return out


def _share(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--variants", default="19:shared,0:shared,0:exclusive", help="profile nice:mode pairs to try (server flags)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="graphgen-bench-") as tmp:
        repository = Path(tmp)
        (repository / "resnet50" / "1").mkdir(parents=True)
        save(build("resnet50"), repository / "resnet50" / "1" / "model.onnx")
        pairs = [pair.split(":") for pair in args.variants.split(",")]
        results = [variant(repository, int(nice), mode, args.runs, args.clients) for nice, mode in pairs]
    print(f"ResNet-50, batch 1, {args.runs} runs per profile, {args.clients} looping clients; {os.cpu_count()} CPUs")
    for r in results:
        print(
            f"\n--profile-nice {r['nice']} --profile-mode {r['mode']}: quiet profile's CPU wait {_share(r['quiet_wait'])}; load average {r['load']:.1f} while loaded; quiet profile {r['quiet_s']:.1f} s;"
            f" {r['served_during']} calls served meanwhile; {r['layers']} layers above {ABOVE:.0%}"
        )
        for i, p in enumerate(r["profiles"], start=1):
            wait = f"{p['cpu_wait']:.0%}" if p["cpu_wait"] is not None else "?"
            print(
                f"  loaded profile {i}: {p['wall_s']:.1f} s = queue {p['queue_ms']:.0f} + setup {p['setup_ms']:.0f} + "
                f"profiler wait {p['wait_ms']:.0f} + runs {p['runs_ms']:.0f} ms (+ the rest); median run's CPU wait "
                f"{wait}; rows add up to {p['adds_up']:.0%} of the median run"
            )
        for stat, s in r["stats"].items():
            print(
                f"  {stat:>6}: error vs the quiet minimum {s['error']:6.1%}  Spearman vs quiet {s['spearman_ref']:.2f}"
                f"  between the two {s['spearman_pair']:.2f}  same top layer {'yes' if s['same_top'] else 'no'}"
            )


if __name__ == "__main__":
    main()
