"""Whole-process build time: ``graphgen build NAME`` vs ``torch.onnx.export`` of the reference model.

Each measurement is a fresh Python process (imports included), as a user experiences it:

* graphgen:      ``python -m graphgen build NAME -o FILE``
* torch dynamo:  build the torchvision/timm model, ``torch.onnx.export(..., dynamo=True)`` (torch's default)
* torch script:  the same with ``dynamo=False`` (the TorchScript exporter)

Runs alternate between the tools so load on the machine hits both alike; the median of
``--repeat`` runs is reported with the ratio torch / graphgen. The goal is ≥ 10×.

    python bench/build_speed.py                    # the default set
    python bench/build_speed.py resnet50 vgg16     # chosen architectures
    python bench/build_speed.py --all              # every architecture with a torch reference
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from graphgen import registry

DEFAULT = ["resnet50", "alexnet", "vgg16", "resnet18", "googlenet", "inception_v3", "resnext50_32x4d", "seresnet50"]
ZOO_II = ["mobilenetv1_100", "mobilenet_v2", "efficientnet_b0", "efficientnet_v2_s", "repvgg_a0", "squeezenet1_1"]
DEFAULT += ZOO_II
TORCH_EXPORT = """
import json, sys, torch
library, name, resolution, dynamo, path, kwargs = sys.argv[1:]
kwargs = json.loads(kwargs)  # the architecture's reference_kwargs (e.g. GoogLeNet without aux heads)
if library == "torchvision":
    import torchvision
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
else:
    import timm
    model = timm.create_model(name, pretrained=False, **kwargs)
x = torch.randn(1, 3, int(resolution), int(resolution))
torch.onnx.export(model.eval(), (x,), path, dynamo=dynamo == "1")
"""


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(name: str, repeat: int, workdir: Path) -> dict[str, float]:
    arch = registry.get(name)
    library, reference = arch.torch_reference

    def torch_export(dynamo: bool, path: Path) -> list[str]:
        arguments = [library, reference, str(arch.resolution), "1" if dynamo else "0", str(path)]
        return [sys.executable, "-c", TORCH_EXPORT, *arguments, json.dumps(arch.reference_kwargs)]

    commands = {
        "graphgen": [sys.executable, "-m", "graphgen", "build", name, "-o", str(workdir / "g.onnx")],
        "torch dynamo": torch_export(dynamo=True, path=workdir / "d.onnx"),
        "torch script": torch_export(dynamo=False, path=workdir / "s.onnx"),
    }
    times: dict[str, list[float]] = {tool: [] for tool in commands}
    for _ in range(repeat):
        for tool, command in commands.items():
            times[tool].append(wall_time(command))
    return {tool: statistics.median(samples) for tool, samples in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*")
    parser.add_argument("--all", action="store_true", help="every architecture with a torch reference")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    names = [a.name for a in registry.architectures() if a.torch_reference] if args.all else args.names or DEFAULT

    print(
        f"{'architecture':<22} {'graphgen':>9} {'torch dynamo':>13} {'torch script':>13} {'ratio dynamo':>13} {'ratio script':>13}"
    )
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            t = measure(name, args.repeat, Path(tmp))
            dynamo, script = t["torch dynamo"] / t["graphgen"], t["torch script"] / t["graphgen"]
            ratios.append((dynamo, script))
            print(
                f"{name:<22} {t['graphgen']:>8.2f}s {t['torch dynamo']:>12.2f}s {t['torch script']:>12.2f}s "
                f"{dynamo:>12.1f}x {script:>12.1f}x",
                flush=True,
            )
    geo = [statistics.geometric_mean(column) for column in zip(*ratios)]
    print(f"{'geometric mean':<22} {'':>9} {'':>13} {'':>13} {geo[0]:>12.1f}x {geo[1]:>12.1f}x")
    print("median of", args.repeat, "whole-process runs each; goal: graphgen >= 10x faster")


if __name__ == "__main__":
    main()
