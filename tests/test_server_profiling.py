"""The profiler: one fresh session per profiled run, outputs equal to the serving session's, retries."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from graphgen_server.profiling import Profiler
from tests.server_helpers import add_tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return add_tiny_model(tmp_path_factory.mktemp("repository"))


class Sessions:
    """Makes sessions of one model, failing the first ``failures`` times."""

    def __init__(self, path, failures: int = 0) -> None:
        self.path, self.failures, self.made = path, failures, 0

    def __call__(self, options: ort.SessionOptions) -> ort.InferenceSession:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("out of memory (simulated)")
        self.made += 1
        options.log_severity_level = 3
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])


def test_each_profiled_run_gets_a_fresh_session_and_the_serving_outputs(model_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    (expected,) = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )
    sessions = Sessions(model_path)
    profiler = Profiler(sessions, model_path, {"input": np.zeros((1, 3, 32, 32), np.float32)})
    try:
        for _ in range(2):
            (logits,), profile, waited_s, run_s = profiler.run({"input": x})
            np.testing.assert_array_equal(logits, expected)
            assert profile.layers and profile.inference_us > 0 and waited_s >= 0 and run_s > 0
            assert any(row.layer.startswith("_blocks.3.") for row in profile.layers)
    finally:
        profiler.close()
    # A session per run (profiling ends with the run), plus the spare after the last run unless
    # close() cancelled it before it started.
    assert sessions.made in (2, 3)


def test_a_failed_session_build_fails_that_call_only(model_path):
    profiler = Profiler(Sessions(model_path, failures=1), model_path, {"input": np.zeros((1, 3, 32, 32), np.float32)})
    feeds = {"input": np.ones((1, 3, 32, 32), np.float32)}
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            profiler.run(feeds)
        (logits,), profile, _, _ = profiler.run(feeds)
        assert logits.shape == (1, 10) and profile.layers
    finally:
        profiler.close()
