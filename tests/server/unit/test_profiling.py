"""The server's profiler: a fresh profiling session per profiled request, built ahead, outputs equal to
the serving session's, setup (build waited for + warm-up) reported apart, failed builds retried."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from graphgen_server.core.profiler import Profiler
from graphgen_server.frontends.profiles import profile_message
from tests.support.server import add_tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return add_tiny_model(tmp_path_factory.mktemp("repository"))


class Options:
    """Session options, failing the first ``failures`` times (a build that runs out of memory)."""

    def __init__(self, failures: int = 0) -> None:
        self.failures, self.made = failures, 0

    def __call__(self) -> ort.SessionOptions:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("out of memory (simulated)")
        self.made += 1
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        return options


WARMUP = {"input": np.zeros((1, 3, 32, 32), np.float32)}


def test_each_profiled_request_gets_a_fresh_session_runs_times_and_the_serving_outputs(model_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    plain = ort.SessionOptions()
    plain.log_severity_level = 3
    (expected,) = ort.InferenceSession(str(model_path), plain, providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )
    options = Options()
    profiler = Profiler(model_path, ["CPUExecutionProvider"], options, WARMUP)
    try:
        for runs in (3, 5):
            done = profiler.run({"input": x}, runs)
            np.testing.assert_array_equal(done.outputs[0], expected)
            profile = done.profile
            assert profile.runs == runs and profile.warmup_runs == 2 and profile.batch == 2
            assert profile.setup_us > 0 and done.setup_s == pytest.approx(profile.setup_us / 1e6)
            assert done.run_s > 0 and profile.build_us > 0
            assert any(row.layer.startswith("_blocks.3.") for row in profile.rows)
            assert all(row.time.p10 <= row.time.median <= row.time.p90 for row in profile.rows)
            assert sum(row.macs for row in profile.rows) > 0  # joined with the static table
            message = profile_message(profile)
            assert message.runs == runs and message.spread == "p10-p90" and message.timing == "host"
            assert message.layers_us + message.overhead_us == message.inference_us
    finally:
        profiler.close()
    # A session per request (profiling ends with it), plus the spare after the last one unless
    # close() cancelled it before it started.
    assert options.made in (2, 3)


def test_a_failed_session_build_fails_that_request_only(model_path):
    profiler = Profiler(model_path, ["CPUExecutionProvider"], Options(failures=1), WARMUP)
    feeds = {"input": np.ones((1, 3, 32, 32), np.float32)}
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            profiler.run(feeds, 2)
        done = profiler.run(feeds, 2)
        assert done.outputs[0].shape == (1, 10) and done.profile.rows
    finally:
        profiler.close()


def test_cuda_graphs_are_refused_for_profiling(model_path):
    with pytest.raises(ValueError, match="enable_cuda_graph"):
        Profiler(model_path, [("CUDAExecutionProvider", {"enable_cuda_graph": "1"})], Options(), WARMUP)


def test_profiles_run_at_the_lowest_cpu_priority_so_serving_comes_first(model_path):
    import os
    import threading

    profiler = Profiler(model_path, ["CPUExecutionProvider"], Options(), WARMUP)
    try:
        profiler.run(WARMUP, 1)  # the builder thread exists now
        nice = profiler._builder.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
        assert nice == 19
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19  # the caller's thread is untouched
    finally:
        profiler.close()
