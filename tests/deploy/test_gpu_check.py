"""`make gpu-check`'s carry (bench/gpu_carry.py): wheels split into parts, carried one call each, joined,
checked and installed offline; and the check itself, which without CUDA says so and exits 2."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import gpu_carry  # noqa: E402 - bench/ is not a package


def _wheel(folder: Path, name: str, payload: bytes) -> Path:
    """A minimal pure-Python wheel holding module ``name`` and a data file of ``payload`` (stored, not deflated)."""
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{name}/data.bin": payload,
        f"{name}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n".encode(),
        f"{name}-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-0.1.dist-info/RECORD,,")
    wheel = folder / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{name}-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.fixture
def carried(tmp_path):
    """A .gpu-carry of two wheels, the larger split into parts of 2,000 bytes."""
    dest = tmp_path / ".gpu-carry"
    (dest / "wheels").mkdir(parents=True)
    _wheel(dest / "wheels", "small_one", b"x")
    big = _wheel(dest / "wheels", "big_one", os.urandom(5000))
    manifest = gpu_carry.pack(dest, "3.11", part_bytes=2000)
    return dest, manifest, big.name


def test_a_large_wheel_travels_in_parts_that_are_joined_checked_and_installed_offline(carried, tmp_path):
    dest, manifest, big = carried
    parts = manifest["split"][big]["parts"]
    assert len(parts) >= 3 and all(part["bytes"] <= 2000 for part in parts)
    assert not (dest / "wheels" / big).exists() and set(manifest["wheels"]) == {"small_one-0.1-py3-none-any.whl"}
    stash, site = tmp_path / "stash", tmp_path / "site"
    for part in parts:  # one device call each: a checkout that holds only what that call carried
        call = tmp_path / f"call-{part['name']}"
        call.mkdir()
        (call / part["name"]).write_bytes((dest / part["name"]).read_bytes())
        gpu_carry.stash(call, stash)
    last = tmp_path / "last-call"
    last.mkdir()
    (last / "MANIFEST.json").write_text((dest / "MANIFEST.json").read_text())
    (last / "wheels").mkdir()
    (last / "wheels" / "small_one-0.1-py3-none-any.whl").write_bytes(
        (dest / "wheels" / "small_one-0.1-py3-none-any.whl").read_bytes()
    )
    gpu_carry.stash(last, stash)
    assert gpu_carry.install(stash, site) == sorted([big, "small_one-0.1-py3-none-any.whl"])
    done = subprocess.run(
        [sys.executable, "-c", "import big_one, small_one; print(big_one.VALUE + small_one.VALUE)"],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "84"


def test_a_missing_or_broken_part_stops_the_install_by_name(carried, tmp_path):
    dest, _, _ = carried
    stash = tmp_path / "stash"
    gpu_carry.stash(dest, stash)
    (stash / "part-02").unlink()
    with pytest.raises(SystemExit, match=r"part-02 of big_one.* was not carried"):
        gpu_carry.install(stash, tmp_path / "site")
    gpu_carry.stash(dest, stash)
    data = bytearray((stash / "part-01").read_bytes())
    data[10] ^= 0xFF
    (stash / "part-01").write_bytes(bytes(data))
    with pytest.raises(SystemExit, match=r"part-01 of big_one.*sha256 differs"):
        gpu_carry.install(stash, tmp_path / "site")


def test_each_call_carries_at_most_64_mib_with_the_working_tree(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_carry, "REPO", tmp_path)
    dest = tmp_path / ".gpu-carry"
    (dest / "wheels").mkdir(parents=True)
    (dest / "wheels" / "grpcio.whl").write_bytes(b"w" * (7 * gpu_carry.MIB))
    (dest / "MANIFEST.json").write_text("{}")
    parts = [
        {"name": f"part-0{i}", "bytes": b} for i, b in enumerate([60 * gpu_carry.MIB] * 4 + [4 * gpu_carry.MIB], 1)
    ]
    manifest = {"split": {"onnxruntime_gpu.whl": {"parts": parts}}, "wheels": {}}
    plan = gpu_carry.calls(manifest, dest, tree_bytes=2 * gpu_carry.MIB)
    assert [len(paths) for paths in plan] == [1, 1, 1, 1, 3]  # the small wheels ride with the last, smallest part
    assert plan[-1][1:] == [".gpu-carry/wheels", ".gpu-carry/MANIFEST.json"]
    with pytest.raises(SystemExit, match="more than"):
        gpu_carry.calls(manifest, dest, tree_bytes=5 * gpu_carry.MIB)  # 60 MiB no longer fits beside it


def test_what_is_carried_is_what_pyproject_pins():
    pins = gpu_carry.pins()
    assert set(gpu_carry.CARRIED) <= set(pins), set(gpu_carry.CARRIED) - set(pins)
    assert pins["nvidia-cuda-cupti"].startswith("13.0.")  # onnxruntime-gpu 1.31.1's CUDA minor


def test_onnxruntime_finds_the_images_cuda_libraries_from_the_install_folder(tmp_path, monkeypatch):
    image = tmp_path / "image-site-packages"
    (image / "nvidia" / "cublas" / "lib").mkdir(parents=True)
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [str(site), str(image)])
    gpu_carry.link_nvidia(site)
    assert (site / "nvidia").resolve() == (image / "nvidia").resolve()


def test_gpu_check_without_cuda_says_so_and_exits_2(tmp_path):
    from graphgen_server.core.providers import cuda_unavailable_reason

    if cuda_unavailable_reason() is None:
        pytest.skip("CUDA works here: make gpu-check measures instead")
    report = tmp_path / "gpu-check.md"
    env = {**os.environ, "GPU_CHECK_REPORT": str(report), "OUT": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--measure"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "NO CUDA HERE" in done.stdout and "Nothing was measured" in report.read_text()
    assert "versions: " in report.read_text() and (tmp_path / "gpu-check.md").exists()


def test_gpu_check_figures_run_through_the_stand_ins(tmp_path, monkeypatch):
    """The figures' code against the fake CUDA libraries (tiny models): what a GPU would run, minus the GPU."""
    import gpu_check

    from graphgen.build import BuildOptions, build, save
    from graphgen.passes import to_fp16
    from tests.support.fake_cuda import install

    install(monkeypatch)
    monkeypatch.setattr(gpu_check, "IMAGE", 32)
    monkeypatch.setattr(gpu_check, "ROUNDS", 1)
    monkeypatch.setattr(gpu_check, "CALLS", 2)
    model = build("resnet18", BuildOptions(resolution=32, num_classes=10))
    paths = {"fp32": save(model, tmp_path / "fp32.onnx")}
    paths["fp16"] = save(to_fp16(model, keep_io_types=False).model, tmp_path / "fp16.onnx")
    report = gpu_check.Report()
    gpu_check.io_binding_figures(report, paths)
    gpu_check.profile_figures(report, paths, dict(os.environ))
    text = "\n".join(report.lines)
    assert "batch 8: run() " in text and "device-side " in text
    assert "fp32: timing device; CUPTI span" in text and "fp16: timing device" in text
    # The CUDA_LAUNCH_BLOCKING side runs in a process of its own, where no GPU stands in: it fails, and says so.
    assert report.failed == ["CUDA_LAUNCH_BLOCKING profile of fp32", "CUDA_LAUNCH_BLOCKING profile of fp16"]
