# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs; a stamp per extra skips reinstalling.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# pytest-xdist workers for make test and make test-fast (0: one process, as a plain `pytest` runs).
WORKERS ?= 2
# A worker that dies (the kernel's OOM killer, a crash in a library) fails the run at once: replaced,
# pytest-xdist 3.8.0's loadgroup scheduling can wait forever at the end (pytest-xdist #1378).
# Two malloc arenas (glibc's default is 8 per core): fewer heaps to hold freed memory. After a test
# that grew its process, tests/conftest.py hands the freed memory back (tests/support/memory.py):
# without that a worker kept 10-14 GB and two ran the 24 GiB machine out of memory.
PYTEST = MALLOC_ARENA_MAX=2 $(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup --max-worker-restart 0

.PHONY: demo test test-fast lint typecheck bench clean gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[$*]'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/python -m graphgen_client.demo

# Debian's chromium for the Netron browser test (never a downloaded browser); if it cannot be
# installed (not root, no apt), that test skips and says why.
$(VENV)/.chromium: | $(BIN)/python
	@if command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	then touch $@; else echo "chromium could not be installed: tests/builder/test_netron_browser.py will be skipped"; fi

test: $(VENV)/.installed-test $(VENV)/.chromium
	$(BIN)/ruff check .
	$(BIN)/python -m mypy
	$(PYTEST)

# The loop to run while working (about two minutes): no server processes (e2e), no sweep of the whole
# registry (zoo), nothing that needs a GPU. tests/conftest.py sets these markers; `make test` runs all.
test-fast: $(VENV)/.installed-test
	$(PYTEST) -m "not e2e and not zoo and not gpu"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy

# mypy over graphgen/, server/ and clients/ (configured in pyproject.toml); also part of lint and test.
typecheck: $(VENV)/.installed-test
	$(BIN)/python -m mypy

bench: $(VENV)/.installed-test
	$(BIN)/python bench/build_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

# On a machine with an NVIDIA GPU: every gpu-marked test and the GPU figures in one report
# (artifacts/gpu-check.md), within 8 minutes. It runs on that machine's own python3, with the wheels
# carried there by bench/gpu_carry.py installed offline (README: Checking on a GPU); no venv.
# Exit 2 where CUDA cannot run (it says why and measures nothing).
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py
