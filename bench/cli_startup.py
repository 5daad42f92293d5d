"""Whole-process times of the command line, beside ``python -c pass`` (median of N runs each).

    python bench/cli_startup.py [--runs 5] [--build] [--before REF]

``graphgen --help`` should answer within 0.2 s and ``graphgen list`` within 0.5 s on an idle
machine. ``--build`` adds ``graphgen build resnet50`` (a few seconds a run). ``--before REF`` runs
every command also from a checkout of git revision REF (a temporary worktree), alternating the
two trees run by run so that both see the same machine load, and prints the ratio.
Timings on a shared machine are noisy: compare ratios measured in one run, not absolute figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"graphgen --help": 0.2, "graphgen list": 0.5}


def commands(build: bool, folder: Path) -> dict[str, list[str]]:
    table = {
        "python -c pass": ["-c", "pass"],
        "graphgen --help": ["-m", "graphgen", "--help"],
        "graphgen list": ["-m", "graphgen", "list"],
    }
    if build:
        table["graphgen build resnet50"] = ["-m", "graphgen", "build", "resnet50", "-o", str(folder / "r50.onnx")]
    return table


def run_once(arguments: list[str], tree: Path) -> float:
    """Seconds for one whole process of ``python ARGUMENTS`` importing graphgen from ``tree``."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], env=env, cwd=tree, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--build", action="store_true", help="also time graphgen build resnet50")
    parser.add_argument("--before", metavar="REF", help="also time the command line of git revision REF")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="graphgen-startup-") as tmp:
        folder = Path(tmp)
        trees = {"now": ROOT}
        if args.before:
            old = folder / "before"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.before],
                check=True,
                capture_output=True,
            )
            trees["before"] = old
        try:
            times = measure(commands(args.build, folder), trees, args.runs)
        finally:
            if args.before:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees["before"])],
                    check=False,
                    capture_output=True,
                )
    report(times, trees, args.runs)
    return 0


def measure(table: dict[str, list[str]], trees: dict[str, Path], runs: int) -> dict[tuple[str, str], list[float]]:
    times: dict[tuple[str, str], list[float]] = {}
    for name, arguments in table.items():
        for _ in range(runs):
            for tree_name, tree in trees.items():  # alternated: both trees see the same load
                times.setdefault((name, tree_name), []).append(run_once(arguments, tree))
    return times


def report(times: dict[tuple[str, str], list[float]], trees: dict[str, Path], runs: int) -> None:
    print(
        f"whole-process seconds, median of {runs} runs (min-max); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    names = list(dict.fromkeys(name for name, _ in times))
    header = f"{'command':<26}" + "".join(f"{tree:>20}" for tree in trees)
    print(header + ("   now/before" if "before" in trees else "") + "   target")
    for name in names:
        cells, medians = [], {}
        for tree in trees:
            samples = times[(name, tree)]
            medians[tree] = statistics.median(samples)
            cells.append(f"{medians[tree]:7.3f} ({min(samples):.2f}-{max(samples):.2f})")
        ratio = f"{medians['now'] / medians['before']:13.2f}" if "before" in trees else ""
        target = TARGETS.get(name)
        verdict = f"   <= {target} s: {'yes' if medians['now'] <= target else 'NO'}" if target else ""
        print(f"{name:<26}" + "".join(f"{cell:>20}" for cell in cells) + ratio + verdict)


if __name__ == "__main__":
    sys.exit(main())
