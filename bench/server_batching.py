"""Dynamic batching and instance groups, side by side in one run (graphgen-server in its own process).

    python bench/server_batching.py [--quick] [--json FILE]      (also: bench/server.py --only batching)

1. dynamic batching on vs off, by number of concurrent clients (1, 8, 32), on the tiny model and
   EfficientNet-Lite0: throughput and p50 of single-image Classify calls. This is the measurement
   behind the server's default for models without a config.pbtxt (``batching.DEFAULT_BATCHING``):
   the default is on only where batching paid at the concurrency a server meets.
2. instance_group count 2 vs 1 (config.pbtxt), 8 concurrent clients, Lite0, dynamic batching off.

The two sides of each comparison alternate in rounds against servers running side by side on the
same models; on a shared machine the figures are noisy, the ratios less so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from graphgen_client.local import LocalServer
from server import build_repository, concurrent_clients  # bench/server.py (this script's directory)

SHAPES = {"tiny": (3, 32, 32), "lite0": (3, 224, 224)}
CALLS = {"tiny": 200, "lite0": 12}  # images per client at full scale (divided by the client count)
CLIENTS = (1, 8, 32)
ROUNDS = 2
INSTANCE_CONFIG = "max_batch_size: 8\ninstance_group [ { count: %d kind: KIND_CPU } ]\n"


def batching_on_off(repository: Path, scale: float) -> list[dict]:
    rows = []
    with (
        LocalServer(repository, ["--dynamic-batching", "off"]) as off_server,
        LocalServer(repository, ["--dynamic-batching", "on"]) as on_server,
    ):
        servers = {"off": off_server, "on": on_server}
        for model, shape in SHAPES.items():
            for clients in CLIENTS:
                calls = max(2, int(CALLS[model] * scale * 8 / clients / ROUNDS))
                runs: dict[str, dict] = {}
                for _ in range(ROUNDS):  # alternate: drift on a shared machine hits both alike
                    for mode, server in servers.items():
                        run = concurrent_clients(server.address, model, clients, calls, shape)
                        runs[mode] = _merge(runs[mode], run) if mode in runs else run
                rows.append(
                    {
                        "model": model,
                        "clients": clients,
                        **runs,
                        "throughput_on_off": runs["on"]["images_per_s"] / runs["off"]["images_per_s"],
                    }
                )
    return rows


def instance_groups(root: Path, lite0: Path, scale: float) -> dict:
    repository = root / "instances"
    for count in (1, 2):
        model_dir = repository / f"lite0_x{count}"
        (model_dir / "1").mkdir(parents=True)
        shutil.copyfile(lite0, model_dir / "1" / "model.onnx")  # (a symlink out of a repository is refused)
        (model_dir / "config.pbtxt").write_text(INSTANCE_CONFIG % count)
    out = {}
    with LocalServer(repository, ["--dynamic-batching", "off"]) as server:
        for _ in range(ROUNDS):  # alternate rounds: drift on a shared machine hits both alike
            for count in (1, 2):
                run = concurrent_clients(
                    server.address, f"lite0_x{count}", 8, max(2, int(3 * scale * 4)), SHAPES["lite0"]
                )
                previous = out.get(count)
                out[count] = run if previous is None else _merge(previous, run)
    return {"x1": out[1], "x2": out[2], "throughput_2_vs_1": out[2]["images_per_s"] / out[1]["images_per_s"]}


def _merge(a: dict, b: dict) -> dict:
    """Two rounds as one: images over the summed wall time; the mean of their p50s."""
    calls = a["calls"] + b["calls"]
    wall = a["calls"] / a["images_per_s"] + b["calls"] / b["images_per_s"]
    return {**b, "images_per_s": calls / wall, "p50_us": (a["p50_us"] + b["p50_us"]) / 2, "calls": calls}


def batching_section(root: Path, paths: dict[str, Path], scale: float) -> dict:
    return {"on_off": batching_on_off(root, scale), "instances": instance_groups(root, paths["lite0"], scale)}


def print_batching(report: dict) -> None:
    print("\ndynamic batching on vs off, single-image Classify calls (images/s, p50 ms):")
    print(f"  {'model':<6} {'clients':>7}  {'off':>16}  {'on':>16}  {'on/off':>6}")
    for r in report["on_off"]:
        off, on = r["off"], r["on"]
        print(
            f"  {r['model']:<6} {r['clients']:>7}  {off['images_per_s']:7.1f} {off['p50_us'] / 1e3:7.1f} ms"
            f"  {on['images_per_s']:7.1f} {on['p50_us'] / 1e3:7.1f} ms  {r['throughput_on_off']:6.2f}x"
        )
    inst = report["instances"]
    print("\ninstance_group count 2 vs 1, lite0, 8 concurrent clients, no dynamic batching:")
    for name in ("x1", "x2"):
        r = inst[name]
        print(f"  count {name[1]}: {r['images_per_s']:7.1f} images/s, p50 {r['p50_us'] / 1e3:7.1f} ms")
    print(f"  throughput 2 vs 1: {inst['throughput_2_vs_1']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the iterations")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="graphgen-bench-") as tmp:
        paths = build_repository(Path(tmp), ("tiny", "lite0"))
        report = batching_section(Path(tmp), paths, 0.25 if args.quick else 1.0)
    print_batching(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
