"""NVIDIA's perf_analyzer (C++ load generator) against a test server, where it is installed.

``$PERF_ANALYZER`` or ``perf_analyzer`` on PATH: the ``tritonclient==2.50.0`` wheel ships
``bin/perf_analyzer``, which needs Debian's ``libb64-0d`` and ``libcudart.so.12`` (the
``nvidia-cuda-runtime-cu12`` wheel) on ``LD_LIBRARY_PATH``. ``make test`` does not install it (a
Debian package and a CUDA runtime for a CPU test run): tests using it skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

PERF_ANALYZER = os.environ.get("PERF_ANALYZER") or shutil.which("perf_analyzer")
# Short, and finishing on a busy machine: any two windows count as stable (figures are not the point here).
SHORT_RUN = ["--measurement-interval", "500", "--max-trials", "3", "--stability-percentage", "1000"]
needs_perf_analyzer = pytest.mark.skipif(
    PERF_ANALYZER is None, reason="perf_analyzer not installed (set PERF_ANALYZER: see tests/support/perf_analyzer.py)"
)


def run_perf_analyzer(server, protocol: str, *extra: str, model: str = "tiny") -> subprocess.CompletedProcess:
    """One short perf_analyzer run against ``server`` (a ServerProcess) over ``protocol`` (grpc or http)."""
    assert PERF_ANALYZER is not None
    address = server.address if protocol == "grpc" else server.http_address
    command = [PERF_ANALYZER, "-m", model, "-u", address, "-i", protocol, *SHORT_RUN, *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)
