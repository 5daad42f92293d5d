"""Speed of converted graphs on onnxruntime (CPU), measured side by side in one run.

* RepVGG-B0: the training form (3×3, 1×1 and identity branches; ``--keep-bn``), the same folded
  by ``fold_repvgg``, and graphgen's natively built ``--deploy`` graph.
  Goal: folded within 3% of native deploy.
* ResNeXt-50 32×4d: ``--form branches`` (32 parallel paths per block), the same rewritten by
  ``group_branches`` (+ ``fold_batchnorm`` for the BatchNorm after each sum), and the native
  ``--form grouped`` build. Goal: grouped ≥ 5× faster than the 32 branches.

Every round times each model in turn (the order rotates) for ``--runs`` inferences, so load on a
shared machine hits all alike; a model's figure is the median over rounds of its per-round
median, and each ratio is the median of the per-round ratios (min–max beside it). Sessions use
onnxruntime's default graph optimisations (which fuse Conv+BatchNorm by themselves) and
``--threads`` intra-op threads. Before timing, each converted graph is checked against the graph
it came from on one random input.

    python bench/conversions.py                  # batch 1, 224×224, 1 thread
    python bench/conversions.py --threads 2 --rounds 9 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from graphgen import registry
from graphgen.build import BuildOptions, build
from graphgen.onnx_io import save_model
from graphgen.passes import fold_batchnorm, fold_repvgg, group_branches


@dataclass(frozen=True)
class Comparison:
    label: str
    slow: str  # the model expected to be slower
    fast: str
    goal: str
    passes: callable  # ratio slow/fast -> bool


COMPARISONS = [
    Comparison("RepVGG-B0: training form / folded", "repvgg training", "repvgg folded", "speed-up", lambda r: True),
    Comparison(
        "RepVGG-B0: folded / native --deploy",
        "repvgg folded",
        "repvgg deploy",
        "0.97-1.03",
        lambda r: 0.97 <= r <= 1.03,
    ),
    Comparison(
        "ResNeXt-50: 32 branches / grouped by the pass",
        "resnext branches",
        "resnext grouped (pass)",
        ">= 5",
        lambda r: r >= 5,
    ),
    Comparison(
        "ResNeXt-50: 32 branches / native grouped",
        "resnext branches",
        "resnext grouped (native)",
        ">= 5",
        lambda r: r >= 5,
    ),
    Comparison(
        "ResNeXt-50: grouped by the pass / native grouped",
        "resnext grouped (pass)",
        "resnext grouped (native)",
        "about 1",
        lambda r: True,
    ),
]


def models(resolution: int) -> dict[str, ir.Model]:
    for name in ("repvgg_b0", "resnext50_32x4d"):
        registry.get(name)  # fails clearly if the zoo lacks it
    options = BuildOptions(batch=1, resolution=resolution)
    training = build("repvgg_b0", BuildOptions(batch=1, resolution=resolution, keep_bn=True))
    branches = build("resnext50_32x4d", BuildOptions(batch=1, resolution=resolution, variant={"form": "branches"}))
    return {
        "repvgg training": training,
        "repvgg folded": fold_repvgg(training).model,
        "repvgg deploy": build("repvgg_b0", BuildOptions(batch=1, resolution=resolution, variant={"deploy": True})),
        "resnext branches": branches,
        "resnext grouped (pass)": fold_batchnorm(group_branches(branches).model).model,
        "resnext grouped (native)": build("resnext50_32x4d", options),
    }


def session(model: ir.Model, threads: int, folder: Path, name: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    path = save_model(model, folder / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}.onnx")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check(sessions: dict, x: np.ndarray) -> list[str]:
    """Each converted graph against its source, on one input (the passes' tests do this thoroughly)."""
    lines = []
    for converted, source in (("repvgg folded", "repvgg training"), ("resnext grouped (pass)", "resnext branches")):
        want = sessions[source].run(None, {"input": x})[0]
        got = sessions[converted].run(None, {"input": x})[0]
        relative = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        lines.append(f"{converted} vs {source}: max relative difference {relative:.2g}")
    return lines


def time_round(sessions: dict, order: list[str], x: np.ndarray, runs: int) -> dict[str, float]:
    medians = {}
    for name in order:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            sessions[name].run(None, {"input": x})
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5, help="inferences per model per round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    built = models(args.resolution)
    x = np.random.default_rng(0).standard_normal((1, 3, args.resolution, args.resolution)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        sessions = {name: session(model, args.threads, Path(folder), name) for name, model in built.items()}
    checks = check(sessions, x)
    names = list(sessions)
    for name in names:  # warm-up: first runs allocate
        sessions[name].run(None, {"input": x})
    rounds = []
    for index in range(args.rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        rounds.append(time_round(sessions, order, x, args.runs))

    per_model = {name: statistics.median(r[name] for r in rounds) for name in names}
    results = []
    for c in COMPARISONS:
        ratios = [r[c.slow] / r[c.fast] for r in rounds]
        ratio = statistics.median(ratios)
        results.append(
            {
                "comparison": c.label,
                "ratio": ratio,
                "min": min(ratios),
                "max": max(ratios),
                "goal": c.goal,
                "met": c.passes(ratio),
            }
        )
    setup = {
        "resolution": args.resolution,
        "batch": 1,
        "threads": args.threads,
        "rounds": args.rounds,
        "runs": args.runs,
    }
    nodes = {name: len(model.graph) for name, model in built.items()}
    if args.json:
        print(
            json.dumps(
                {
                    "setup": setup,
                    "ms": {k: v * 1e3 for k, v in per_model.items()},
                    "nodes": nodes,
                    "checks": checks,
                    "ratios": results,
                },
                indent=2,
            )
        )
        return
    print(
        f"onnxruntime CPU, batch 1, {args.resolution}x{args.resolution}, {args.threads} thread(s), "
        f"{args.rounds} rounds x {args.runs} runs"
    )
    for line in checks:
        print(f"check: {line}")
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {per_model[name] * 1e3:9.2f} ms  {nodes[name]:6,} nodes")
    for r in results:
        verdict = "met" if r["met"] else "NOT met"
        print(
            f"{r['comparison']:<50} {r['ratio']:6.3f}x  (rounds {r['min']:.3f}-{r['max']:.3f})  goal {r['goal']}: {verdict}"
        )


if __name__ == "__main__":
    main()
